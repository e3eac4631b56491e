@testable import CacheAsideMemory
@testable import MemoryBench
import Testing

/// The index and the ghost queue against simple models, with hashes chosen to collide.
@Suite struct StructureTests {
    /// Random inserts and removals, many hashes sharing their upper bits (the index's
    /// home position) so that probe runs wrap around and backward shifts happen.
    @Test func theIndexAgreesWithADictionaryThroughInsertsAndRemovals() {
        var generator = SplitMix64(seed: 3)
        var table = IndexTable()
        var model: [UInt64: Int32] = [:]  // hash -> slot
        var nextSlot: Int32 = 0
        for step in 0..<6000 {
            let hash = (generator.next() % 64) << 32 | generator.next() & 0xFFFF_FFFF
            if let slot = model[hash] {
                let removed = table.remove(hash: hash, slot: slot)
                #expect(removed, "step \(step)")
                model[hash] = nil
            } else if generator.next() % 3 != 0 {
                table.insert(hash: hash, slot: nextSlot)
                model[hash] = nextSlot
                nextSlot += 1
            }
            if step % 1000 == 0 {
                for (hash, slot) in model {
                    #expect(table.find(hash: hash, where: { $0 == slot })?.slot == slot)
                }
            }
        }
        #expect(table.count == model.count)
        for (hash, slot) in model {
            #expect(table.find(hash: hash, where: { $0 == slot })?.slot == slot)
        }
        for (hash, slot) in model {
            let removed = table.remove(hash: hash, slot: slot)
            #expect(removed)
        }
        #expect(table.count == 0)
        #expect(table.buckets.allSatisfy { $0 == 0 })
    }

    @Test func theGhostKeepsTheMostRecentHashesUpToItsLimit() {
        var ghost = GhostQueue()
        for hash in UInt64(1)...1000 { ghost.add(hash << 20, limit: 100) }
        #expect(ghost.count == 100)
        for hash in UInt64(1)...900 { #expect(!ghost.contains(hash << 20)) }
        for hash in UInt64(901)...1000 { #expect(ghost.contains(hash << 20)) }
        ghost.add(950 << 20, limit: 100)  // already there: stays where it is
        ghost.add(5000 << 20, limit: 100)
        #expect(!ghost.contains(901 << 20) && ghost.contains(950 << 20) && ghost.contains(5000 << 20))
        ghost.trim(to: 10)
        #expect(ghost.count == 10 && ghost.contains(5000 << 20) && !ghost.contains(990 << 20))
    }
}

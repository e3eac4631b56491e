#ifndef C_MALLOC_STATISTICS_H
#define C_MALLOC_STATISTICS_H

#include <stddef.h>

/// Bytes the C allocator has handed out and not yet had back (glibc: mallinfo2's
/// uordblks plus hblkhd, every arena); 0 where the platform does not tell.
size_t c_malloc_bytes_in_use(void);

/// Returns free memory at the top of the heap and in free pages to the system (glibc's
/// malloc_trim(0)); does nothing elsewhere.
void c_malloc_trim(void);

#endif

#include "CMallocStatistics.h"

#include <stdlib.h>  /* defines __GLIBC__ on glibc */

#if defined(__GLIBC__)
#include <malloc.h>

size_t c_malloc_bytes_in_use(void) {
#if __GLIBC_PREREQ(2, 33)
    struct mallinfo2 info = mallinfo2();
    return info.uordblks + info.hblkhd;
#else
    struct mallinfo info = mallinfo();  /* int fields: wrong past 2 GiB */
    return (size_t)(unsigned)info.uordblks + (size_t)(unsigned)info.hblkhd;
#endif
}

void c_malloc_trim(void) {
    malloc_trim(0);
}
#else
size_t c_malloc_bytes_in_use(void) {
    return 0;
}

void c_malloc_trim(void) {
}
#endif

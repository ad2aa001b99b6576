/* backend_cuda.c — placeholder until the driver backend lands. */
#include "backend_int.h"

#include <stdio.h>
#include <unistd.h>

int agile__cuda_open(agile__backend **out, char *why, size_t whycap)
{
    if (why && whycap)
        snprintf(why, whycap, "cuda backend not built yet");
    return AGILE_ENODEV;
}
int agile__cuda_cmem_reserve(agile__cwin *w)
{
    return AGILE_ENODEV;
}
int agile__cuda_cmem_map(agile__cwin *w, int fd, uint64_t offset, uint64_t size)
{
    close(fd);
    return AGILE_ENODEV;
}
int agile__cuda_cmem_unmap(agile__cwin *w, uint64_t offset, uint64_t size)
{
    return AGILE_ENODEV;
}
void agile__cuda_cmem_release(agile__cwin *w)
{
}

/*
 * What `_libfastread.c` shares with `_libpassthrough.c`: the payload files
 * the daemon verified, and how to borrow one.
 */
#ifndef PRODFS_LIBFASTREAD_H
#define PRODFS_LIBFASTREAD_H

#include <stdint.h>

struct blobfile {
    uint32_t slot;
    int fd;      /* -1 until the first read or open opens `path` (atomically: two threads may) */
    char *path;  /* the payload file */
    int refs;    /* the slot's, plus one per read in flight or per borrower */
    int backing; /* the kernel's passthrough id for `fd`, 0 before the first passthrough open */
    uint64_t size, ino, mtime_ns, ctime_ns;
};

/* `ino`'s payload file, opened and checked, with a reference taken; NULL
 * when it has none or its check failed (the slot is then emptied and the daemon decides). */
struct blobfile *prodfs_fastread_acquire(uint64_t ino);
void prodfs_fastread_unref(struct blobfile *f);
/* 1 if `f` still has the contents it was verified with (linked or not). */
int prodfs_fastread_intact(const struct blobfile *f);
/* Counts an open as a use of `f`'s payload, for the cache's LRU. */
void prodfs_fastread_used(const struct blobfile *f);

/* In _libpassthrough.c: the file that had passthrough id `backing` is gone. */
void prodfs_passthrough_forget(int backing);

#endif

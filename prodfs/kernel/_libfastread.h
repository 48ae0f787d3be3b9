/*
 * What `_libfastread.c` shares with `_libpassthrough.c`: the payload files
 * the daemon verified, and how to borrow one.
 */
#ifndef PRODFS_LIBFASTREAD_H
#define PRODFS_LIBFASTREAD_H

#include <stdint.h>

struct blobfile {
    uint32_t slot;
    int fd;      /* -1 until the first read opens `path` (atomically: two threads may) */
    char *path;  /* the payload file */
    int refs;    /* the slot's, plus one per read in flight or per borrower */
    int backing; /* the kernel's passthrough id for `fd`, 0 before the first passthrough open */
    uint64_t size, ino, mtime_ns, ctime_ns;
};

/* `ino`'s payload file, with a reference taken; NULL when it has none. `need_fd`: open the slot's
 * own fd (for reads) and check it; NULL if the check failed (the slot is then emptied and the
 * daemon decides). Without `need_fd` the caller checks a file of its own. */
struct blobfile *prodfs_fastread_acquire(uint64_t ino, int need_fd);
void prodfs_fastread_unref(struct blobfile *f);
/* `f` failed its check: empty its slot (if it still holds `f`) and drop the reference. */
void prodfs_fastread_failed(struct blobfile *f);
/* 1 if the file behind `fd` has the contents `f` was verified with; `linked`: and is still in the cache. */
int prodfs_fastread_same(int fd, const struct blobfile *f, int linked);
/* A new fd on `f`'s file, checked; -1 if it cannot be opened or changed. */
int prodfs_fastread_open_checked(const struct blobfile *f);
/* Counts an open as a use of `f`'s payload, for the cache's LRU. */
void prodfs_fastread_used(const struct blobfile *f);

/* In _libpassthrough.c: the file that had passthrough id `backing` is gone. */
void prodfs_passthrough_forget(int backing);
/* In _libpassthrough.c: `f` left the cache (evicted, or found changed). */
void prodfs_passthrough_dropped(struct blobfile *f);

#endif

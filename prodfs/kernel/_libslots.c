/*
 * The payload files the daemon verified, lent to the C paths that serve
 * them: `_libfastread.c` reads them, `_libpassthrough.c` hands them to the
 * kernel. Depends on no other file of the library (see `_libprodfs.h`).
 *
 * Two tables, filled from Python (`prodfs.kernel._fastpath.FastReads`):
 *   slots: a verified payload file each (its path, then an fd of its own, its
 *          signature and a generation that changes whenever the slot is
 *          refilled or emptied);
 *   map:   inode -> (slot, generation), direct-mapped: a collision replaces
 *          the older inode, which then takes the slow path once and is mapped
 *          again. An inode never changes content (see `prodfs.kernel._zeroopen`),
 *          so an entry is right for as long as its slot keeps its generation.
 * A slot's file is reference counted, so emptying or refilling the slot
 * never closes an fd a thread is reading, nor a passthrough id a record uses.
 *
 * Whoever borrows a file checks, before serving it, that it is still the one
 * that was verified (inode, size, mtime, ctime, still linked: the same test
 * as the daemon's); a file that fails is let go here and the request goes to
 * the daemon, which re-verifies or refetches the payload and may register it
 * again.
 *
 * Passthrough gives a file a kernel id of its own (`struct blobfile.backing`)
 * and keeps files for later opens; this file cannot call it (that would be a
 * call upwards), so passthrough registers hooks (`prodfs_slots_set_hooks`)
 * to hear when a file with an id is gone and when a file left the cache.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define FUSE_USE_VERSION 31
#include <fuse_lowlevel.h>

#include "_libprodfs.h"

#define MAX_SLOTS 65536
#define MAP_BITS 18
#define MAP_SIZE (1u << MAP_BITS)

struct slot {
    struct blobfile *file;
    uint32_t gen;
};

struct mapping {
    uint64_t inode;
    uint32_t slot, gen;
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER; /* slots, map, refs */
static struct slot slots[MAX_SLOTS];
static struct mapping map[MAP_SIZE];
static volatile int live; /* read without the lock on the hot path: set before any mapping */
static struct prodfs_slots_hooks hooks; /* set at load, before any thread: read without a lock */

/* Set from Python: how many payload files the slots may hold open for reads (slots opened for
 * passthrough keep none). Past it, a read goes to the daemon. */
int prodfs_fastread_max_fds = 1024;
static int open_fds;

/* Read from Python: reads served in C, bytes, reads handed back to pyfuse3 after a failed check
 * (counted here, by `prodfs_slots_failed`), errors. */
uint64_t prodfs_fastread_counters[4];
/* Read from Python: reads served per slot, so that the cache's LRU sees what is used. */
uint32_t prodfs_fastread_slot_reads[MAX_SLOTS];

void prodfs_slots_set_hooks(const struct prodfs_slots_hooks *h)
{
    hooks = *h;
}

static void unref(struct blobfile *f) /* with `lock` held */
{
    if (--f->refs == 0) {
        if (f->backing > 0 && hooks.backing_gone != NULL)
            hooks.backing_gone(f->backing);
        if (f->fd >= 0) {
            close(f->fd);
            __atomic_sub_fetch(&open_fds, 1, __ATOMIC_RELAXED);
        }
        free(f->path);
        free(f);
    }
}

static void empty_slot(uint32_t s) /* with `lock` held */
{
    if (slots[s].file != NULL) {
        unref(slots[s].file);
        slots[s].file = NULL;
    }
    slots[s].gen++;
}

static int same_stat(const struct stat *st, const struct blobfile *f)
{
    return (uint64_t)st->st_ino == f->ino && (uint64_t)st->st_size == f->size &&
           (uint64_t)st->st_mtim.tv_sec * 1000000000u + st->st_mtim.tv_nsec == f->mtime_ns &&
           (uint64_t)st->st_ctim.tv_sec * 1000000000u + st->st_ctim.tv_nsec == f->ctime_ns;
}

/* `linked`: the file must also still be in the cache (a borrowed file may have been evicted since). */
int prodfs_slots_same(int fd, const struct blobfile *f, int linked)
{
    struct stat st;

    return fstat(fd, &st) == 0 && (!linked || st.st_nlink > 0) && same_stat(&st, f);
}

int prodfs_slots_open_checked(const struct blobfile *f)
{
    int fd = open(f->path, O_RDONLY | O_CLOEXEC);

    if (fd >= 0 && !prodfs_slots_same(fd, f, 1)) {
        close(fd);
        fd = -1;
    }
    return fd;
}

void prodfs_slots_unref(struct blobfile *f)
{
    pthread_mutex_lock(&lock);
    unref(f);
    pthread_mutex_unlock(&lock);
}

void prodfs_slots_used(const struct blobfile *f)
{
    __atomic_add_fetch(&prodfs_fastread_slot_reads[f->slot], 1, __ATOMIC_RELAXED);
}

struct blobfile *prodfs_slots_acquire(uint64_t ino, int need_fd)
{
    struct mapping *m = &map[(ino * UINT64_C(0x9E3779B97F4A7C15)) >> (64 - MAP_BITS)];
    struct blobfile *f = NULL;
    int fd;

    if (!live)
        return NULL;
    pthread_mutex_lock(&lock);
    if (m->inode == ino && slots[m->slot].gen == m->gen && slots[m->slot].file != NULL) {
        f = slots[m->slot].file;
        f->refs++;
    }
    pthread_mutex_unlock(&lock);
    if (f == NULL)
        return NULL;
    /* Two threads may get here (libfuse's, and the passthrough reader): the first fd set wins. */
    if (need_fd && __atomic_load_n(&f->fd, __ATOMIC_ACQUIRE) < 0 &&
        __atomic_add_fetch(&open_fds, 1, __ATOMIC_RELAXED) <= prodfs_fastread_max_fds) {
        int fd = open(f->path, O_RDONLY | O_CLOEXEC), none = -1;

        if (fd < 0 || !__atomic_compare_exchange_n(&f->fd, &none, fd, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
            if (fd >= 0)
                close(fd);
            __atomic_sub_fetch(&open_fds, 1, __ATOMIC_RELAXED);
        }
    } else if (need_fd && __atomic_load_n(&f->fd, __ATOMIC_ACQUIRE) < 0) {
        __atomic_sub_fetch(&open_fds, 1, __ATOMIC_RELAXED); /* at the cap: the daemon reads this one */
    }
    if (!need_fd)
        return f; /* the caller opens and checks a file of its own (`prodfs_slots_open_checked`) */
    fd = __atomic_load_n(&f->fd, __ATOMIC_ACQUIRE);
    if (fd < 0 || !prodfs_slots_same(fd, f, 1)) {
        prodfs_slots_failed(f);
        return NULL;
    }
    return f;
}

void prodfs_slots_failed(struct blobfile *f)
{
    /* Changed in place, truncated or removed since it was verified: the daemon decides. */
    uint32_t s = f->slot;
    int held;

    pthread_mutex_lock(&lock);
    held = slots[s].file == f;
    unref(f); /* the caller's reference first: while the slot holds `f`, this one is not the last */
    if (held)
        empty_slot(s);
    pthread_mutex_unlock(&lock);
    __atomic_add_fetch(&prodfs_fastread_counters[2], 1, __ATOMIC_RELAXED);
}

/*
 * Fill slot `s` with the payload file at `path`, verified with that signature
 * (by the daemon, or by another process per the verification ledger): the
 * slot's new generation, or -1. The file is opened at its first read, and
 * every read checks that it still has the signature.
 */
int64_t prodfs_fastread_put(uint32_t s, const char *path, uint64_t size, uint64_t ino, uint64_t mtime_ns,
                            uint64_t ctime_ns)
{
    struct blobfile *f;
    int64_t gen;

    if (s >= MAX_SLOTS || (f = malloc(sizeof(*f))) == NULL)
        return -1;
    *f = (struct blobfile){.slot = s, .fd = -1, .refs = 1, .size = size, .ino = ino, .mtime_ns = mtime_ns, .ctime_ns = ctime_ns};
    if ((f->path = strdup(path)) == NULL) {
        free(f);
        return -1;
    }
    pthread_mutex_lock(&lock);
    empty_slot(s);
    slots[s].file = f;
    gen = slots[s].gen;
    pthread_mutex_unlock(&lock);
    return gen;
}

void prodfs_fastread_drop(uint32_t s)
{
    struct blobfile *f;

    if (s >= MAX_SLOTS)
        return;
    pthread_mutex_lock(&lock);
    if ((f = slots[s].file) != NULL)
        f->refs++;
    empty_slot(s);
    pthread_mutex_unlock(&lock);
    if (f != NULL) { /* out of the cache: passthrough's idle records must not keep it either */
        if (hooks.dropped != NULL)
            hooks.dropped(f);
        prodfs_slots_unref(f);
    }
}

/* Send `inode`'s reads to slot `s`: 1, or 0 if the slot no longer holds generation `gen` (emptied here). */
int prodfs_fastread_map(uint64_t inode, uint32_t s, uint32_t gen)
{
    struct mapping *m = &map[(inode * UINT64_C(0x9E3779B97F4A7C15)) >> (64 - MAP_BITS)];
    int current;

    if (s >= MAX_SLOTS)
        return 0;
    pthread_mutex_lock(&lock);
    current = slots[s].gen == gen && slots[s].file != NULL;
    if (current)
        *m = (struct mapping){inode, s, gen};
    pthread_mutex_unlock(&lock);
    return current;
}

void prodfs_fastread_put_many(const struct prodfs_slot_rec *recs, uint32_t n, const char *paths, int64_t *gens)
{
    for (uint32_t i = 0; i < n; i++) {
        const struct prodfs_slot_rec *r = &recs[i];
        int64_t gen = -1;
        uint32_t s = r->slot;

        if (r->path_off == PRODFS_MAP_ONLY) {
            /* never the slot's current file as such: if the earlier put failed, it is another payload */
            if (r->slot < i && recs[r->slot].path_off != PRODFS_MAP_ONLY) {
                s = recs[r->slot].slot;
                gen = gens[r->slot];
            }
        } else {
            gen = prodfs_fastread_put(s, paths + r->path_off, r->size, r->ino, r->mtime_ns, r->ctime_ns);
        }
        if (gen >= 0 && !prodfs_fastread_map(r->inode, s, (uint32_t)gen))
            gen = -1;
        gens[i] = gen;
    }
}

int prodfs_fastread_max_slots(void)
{
    return MAX_SLOTS;
}

void prodfs_slots_enable(void)
{
    live = 1;
}

void prodfs_slots_disable(void)
{
    live = 0;
}

void prodfs_slots_clear(void)
{
    pthread_mutex_lock(&lock);
    for (uint32_t s = 0; s < MAX_SLOTS; s++)
        empty_slot(s);
    memset(map, 0, sizeof(map));
    pthread_mutex_unlock(&lock);
}

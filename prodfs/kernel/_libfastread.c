/*
 * Reads answered in C: the READ of a payload the daemon has verified never
 * enters Python.
 *
 * A read that reaches a pyfuse3 daemon costs about 150 us of CPU in the
 * event loop before any byte moves (trio's lock and wait, the Python
 * handler), on the one thread that also answers lookups. Cold reads are
 * nothing but that: a cold small file is one read, a cold large file a few
 * hundred 1 MiB reads. The wrapped `read` of `_libzeroopen.c` first asks
 * `prodfs_fastread`; for an inode the daemon registered it checks, on the
 * libfuse thread, that the payload file is still the one that was verified
 * (inode, size, mtime, ctime, still linked: the same test as the daemon's;
 * the file is opened there at its first read),
 * and hands the read to a small pool of threads that `pread` and reply. Any
 * other read, or one whose check fails, goes to pyfuse3 as before: the
 * daemon then re-verifies or refetches the payload and may register it again.
 *
 * Two tables, filled from Python (`prodfs._fastpath`):
 *   slots: a verified payload file each (its path, then an fd of its own, its
 *          signature and a generation that changes whenever the slot is
 *          refilled or emptied);
 *   map:   inode -> (slot, generation), direct-mapped: a collision replaces
 *          the older inode, which then takes the slow path once and is mapped
 *          again. An inode never changes content (see `prodfs._zeroopen`),
 *          so an entry is right for as long as its slot keeps its generation.
 * A slot's file is reference counted, so emptying or refilling the slot
 * never closes an fd a thread is reading.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define FUSE_USE_VERSION 31
#include <fuse_lowlevel.h>

#include "_libfastread.h"

#define MAX_SLOTS 65536
#define MAP_BITS 18
#define MAP_SIZE (1u << MAP_BITS)
#define QUEUE_SIZE 1024
#define MAX_THREADS 16

struct slot {
    struct blobfile *file;
    uint32_t gen;
};

struct mapping {
    uint64_t inode;
    uint32_t slot, gen;
};

struct job {
    fuse_req_t req;
    struct blobfile *file;
    size_t size;
    off_t off;
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER; /* slots, map, refs */
static struct slot slots[MAX_SLOTS];
static struct mapping map[MAP_SIZE];

static pthread_mutex_t qlock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t qcond = PTHREAD_COND_INITIALIZER;
static struct job queue[QUEUE_SIZE];
static unsigned qhead, qlen;
static int stopping;
static pthread_t threads[MAX_THREADS];
static int nthreads;
static volatile int running; /* read without the lock on the hot path: set before any mapping */

/* Set from Python: how many payload files the slots may hold open for reads (slots opened for
 * passthrough keep none). Past it, a read goes to the daemon. */
int prodfs_fastread_max_fds = 1024;
static int open_fds;

/* Read from Python: reads served here, bytes, reads handed back to pyfuse3 after a failed check, errors. */
uint64_t prodfs_fastread_counters[4];
/* Read from Python: reads served per slot, so that the cache's LRU sees what is used. */
uint32_t prodfs_fastread_slot_reads[MAX_SLOTS];

static void count(int which, uint64_t n)
{
    __atomic_add_fetch(&prodfs_fastread_counters[which], n, __ATOMIC_RELAXED);
}

static void unref(struct blobfile *f) /* with `lock` held */
{
    if (--f->refs == 0) {
        if (f->backing > 0)
            prodfs_passthrough_forget(f->backing);
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
int prodfs_fastread_same(int fd, const struct blobfile *f, int linked)
{
    struct stat st;

    return fstat(fd, &st) == 0 && (!linked || st.st_nlink > 0) && same_stat(&st, f);
}

int prodfs_fastread_open_checked(const struct blobfile *f)
{
    int fd = open(f->path, O_RDONLY | O_CLOEXEC);

    if (fd >= 0 && !prodfs_fastread_same(fd, f, 1)) {
        close(fd);
        fd = -1;
    }
    return fd;
}

void prodfs_fastread_unref(struct blobfile *f)
{
    pthread_mutex_lock(&lock);
    unref(f);
    pthread_mutex_unlock(&lock);
}

void prodfs_fastread_used(const struct blobfile *f)
{
    __atomic_add_fetch(&prodfs_fastread_slot_reads[f->slot], 1, __ATOMIC_RELAXED);
}

static void serve(struct job *job)
{
    struct blobfile *f = job->file;
    size_t want = 0, got = 0;
    char *buf = NULL;
    int err = 0;

    if ((uint64_t)job->off < f->size)
        want = f->size - job->off < job->size ? f->size - job->off : job->size;
    /* A buffer per read, not one per thread: measured on the benchmark machine (a VM), a cold
     * pread into a buffer used again and again cost up to 4x the CPU in the kernel's copy
     * (0.3 s against 0.15 s of daemon CPU per cold 256 MiB); malloc's memory does not. */
    if (want > 0 && (buf = malloc(want)) == NULL)
        err = ENOMEM;
    while (!err && got < want) {
        ssize_t n = pread(f->fd, buf + got, want - got, job->off + got);
        if (n > 0)
            got += n;
        else if (n == 0)
            break; /* shorter than verified: only if truncated since, which the next check sees */
        else if (errno != EINTR)
            err = errno;
    }
    if (err) {
        count(3, 1);
        fuse_reply_err(job->req, err);
    } else {
        count(0, 1);
        count(1, got);
        prodfs_fastread_used(f);
        fuse_reply_buf(job->req, buf, got);
    }
    free(buf);
    prodfs_fastread_unref(f);
}

static void *worker(void *arg)
{
    struct job job;

    (void)arg;
    for (;;) {
        pthread_mutex_lock(&qlock);
        while (qlen == 0 && !stopping)
            pthread_cond_wait(&qcond, &qlock);
        if (qlen == 0) { /* stopping, and nothing left to answer */
            pthread_mutex_unlock(&qlock);
            break;
        }
        job = queue[qhead];
        qhead = (qhead + 1) % QUEUE_SIZE;
        qlen--;
        pthread_mutex_unlock(&qlock);
        serve(&job);
    }
    return NULL;
}

struct blobfile *prodfs_fastread_acquire(uint64_t ino, int need_fd)
{
    struct mapping *m = &map[(ino * UINT64_C(0x9E3779B97F4A7C15)) >> (64 - MAP_BITS)];
    struct blobfile *f = NULL;
    int fd;

    if (!running)
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
        return f; /* the caller opens and checks a file of its own (`prodfs_fastread_open_checked`) */
    fd = __atomic_load_n(&f->fd, __ATOMIC_ACQUIRE);
    if (fd < 0 || !prodfs_fastread_same(fd, f, 1)) {
        prodfs_fastread_failed(f);
        return NULL;
    }
    return f;
}

void prodfs_fastread_failed(struct blobfile *f)
{
    /* Changed in place, truncated or removed since it was verified: the daemon decides. */
    pthread_mutex_lock(&lock);
    if (slots[f->slot].file == f)
        empty_slot(f->slot);
    unref(f);
    pthread_mutex_unlock(&lock);
    count(2, 1);
}

/* Called by the wrapped `read` on the libfuse thread: 1 if the read is taken here, 0 for pyfuse3. */
int prodfs_fastread(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off)
{
    struct blobfile *f = prodfs_fastread_acquire(ino, 1);
    int queued = 0;

    if (f == NULL)
        return 0;
    pthread_mutex_lock(&qlock);
    if (qlen < QUEUE_SIZE && !stopping) {
        queue[(qhead + qlen) % QUEUE_SIZE] = (struct job){req, f, size, off};
        qlen++;
        queued = 1;
        pthread_cond_signal(&qcond);
    }
    pthread_mutex_unlock(&qlock);
    if (!queued)
        prodfs_fastread_unref(f);
    return queued;
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
        prodfs_passthrough_dropped(f);
        prodfs_fastread_unref(f);
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

int prodfs_fastread_max_slots(void)
{
    return MAX_SLOTS;
}

/* Start `n` threads; 0 on success. */
int prodfs_fastread_start(int n)
{
    if (running || n < 1 || n > MAX_THREADS)
        return -1;
    stopping = 0;
    for (nthreads = 0; nthreads < n; nthreads++)
        if (pthread_create(&threads[nthreads], NULL, worker, NULL) != 0)
            break;
    running = nthreads > 0;
    return running ? 0 : -1;
}

/* Answer what is queued, stop the threads and empty the tables: before the session goes. */
void prodfs_fastread_stop(void)
{
    running = 0;
    pthread_mutex_lock(&qlock);
    stopping = 1;
    pthread_cond_broadcast(&qcond);
    pthread_mutex_unlock(&qlock);
    for (int i = 0; i < nthreads; i++)
        pthread_join(threads[i], NULL);
    nthreads = 0;
    pthread_mutex_lock(&lock);
    for (uint32_t s = 0; s < MAX_SLOTS; s++)
        empty_slot(s);
    memset(map, 0, sizeof(map));
    pthread_mutex_unlock(&lock);
}

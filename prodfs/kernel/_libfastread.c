/*
 * Reads answered in C: the READ of a payload the daemon has verified never
 * enters Python.
 *
 * A read that reaches a pyfuse3 daemon costs about 150 us of CPU in the
 * event loop before any byte moves (trio's lock and wait, the Python
 * handler), on the one thread that also answers lookups. Cold reads are
 * nothing but that: a cold small file is one read, a cold large file a few
 * hundred 1 MiB reads. The wrapped `read` of `_libzeroopen.c` first asks
 * `prodfs_fastread`; for an inode the daemon registered (`_libslots.c`) it
 * borrows the payload file and checks, on the libfuse thread, that the file
 * is still the one that was verified (the file is opened there at its first
 * read), and hands the read to a small pool of threads that `pread` and
 * reply. Any other read, or one whose check fails, goes to pyfuse3 as
 * before: the daemon then re-verifies or refetches the payload and may
 * register it again.
 *
 * This file owns the threads and their queue; the payload files are
 * `_libslots.c`'s, lent for as long as the read is in flight (a reference
 * per job), and lent at all only while these threads run.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>

#define FUSE_USE_VERSION 31
#include <fuse_lowlevel.h>

#include "_libprodfs.h"

#define QUEUE_SIZE 1024
#define MAX_THREADS 16

struct job {
    fuse_req_t req;
    struct blobfile *file;
    size_t size;
    off_t off;
};

static pthread_mutex_t qlock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t qcond = PTHREAD_COND_INITIALIZER;
static struct job queue[QUEUE_SIZE];
static unsigned qhead, qlen;
static int stopping;
static pthread_t threads[MAX_THREADS];
static int nthreads; /* > 0 from a successful start to the stop: the slots are lent meanwhile */

/* prodfs_fastread_counters (in _libslots.c): [0] reads served here, [1] bytes, [3] errors. */
static void count(int which, uint64_t n)
{
    __atomic_add_fetch(&prodfs_fastread_counters[which], n, __ATOMIC_RELAXED);
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
        prodfs_slots_used(f);
        fuse_reply_buf(job->req, buf, got);
    }
    free(buf);
    prodfs_slots_unref(f);
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

/* Called by the wrapped `read` on the libfuse thread: 1 if the read is taken here, 0 for pyfuse3. */
int prodfs_fastread(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off)
{
    struct blobfile *f = prodfs_slots_acquire(ino, 1);
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
        prodfs_slots_unref(f);
    return queued;
}

/* Start `n` threads; 0 on success. */
int prodfs_fastread_start(int n)
{
    if (nthreads > 0 || n < 1 || n > MAX_THREADS)
        return -1;
    stopping = 0;
    for (nthreads = 0; nthreads < n; nthreads++)
        if (pthread_create(&threads[nthreads], NULL, worker, NULL) != 0)
            break;
    if (nthreads == 0)
        return -1;
    prodfs_slots_enable();
    return 0;
}

/* Answer what is queued, stop the threads and empty the tables: before the session goes. */
void prodfs_fastread_stop(void)
{
    prodfs_slots_disable();
    pthread_mutex_lock(&qlock);
    stopping = 1;
    pthread_cond_broadcast(&qcond);
    pthread_mutex_unlock(&qlock);
    for (int i = 0; i < nthreads; i++)
        pthread_join(threads[i], NULL);
    nthreads = 0;
    prodfs_slots_clear();
}

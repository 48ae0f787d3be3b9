/*
 * Passthrough opens: the kernel reads a verified payload straight from the
 * cache's file, with that file's own page cache, and never asks the daemon.
 *
 * Through FUSE, a file's pages live in the FUSE inode's page cache, which
 * this kernel fills in 4 KiB folios: a warm sequential read costs about 1.6x
 * native (see docs/benchmarks.md). Linux 6.9 and later can instead bind an
 * open FUSE file to a backing file: the daemon registers the backing file
 * (ioctl FUSE_DEV_IOC_BACKING_OPEN, root only) and answers OPEN with
 * FOPEN_PASSTHROUGH and the id it got. Reads, mmap and readahead then go to
 * the backing file as if it had been opened directly.
 *
 * libfuse 3.14 predates this (3.16 has it), so this file speaks the protocol
 * itself, through libfuse's custom I/O hooks (`fuse_session_custom_io`):
 *  - A thread of its own reads the device (`reader`). What it can answer,
 *    it answers there; every other request is queued for pyfuse3, whose loop
 *    waits on an eventfd put in the device's place (`fuse_session_mount`)
 *    and reads the queue through `io_read`. A request answered here never
 *    enters Python: about 70 us of pyfuse3's loop saved each.
 *  - INIT: if the kernel offers FUSE_PASSTHROUGH, the reply libfuse writes
 *    (`io_writev`) is given the flag and a stacking depth of 1 (no writeback
 *    cache here).
 *  - OPEN of an inode the daemon registered a verified payload for
 *    (`_libslots.c`, which the C read path borrows from too: the same
 *    check as a read) is answered here; so is its RELEASE.
 *  - LOOKUP of a name the daemon handed over (`_libfastlookup.c`: names
 *    inside versions) is answered here too.
 *  - An OPEN the daemon answers (payload not fetched or not verified yet)
 *    comes back here through `fuse_reply_open`, which this library
 *    provides ahead of libfuse's: a file handle tagged PRODFS_PASSTHROUGH_BIT
 *    asks for passthrough, the payload having just been registered.
 *
 * The kernel keeps one backing file per inode while it is open, and refuses
 * an open that mixes modes (passthrough with page-cache opens). So each
 * inode open here has a record: how many opens are in passthrough, on which
 * file, and how many in page-cache mode (a fallback). While an inode has
 * passthrough opens, a new open reuses their file if it is intact, and is
 * refused (EIO) if the file changed in place since; while it has page-cache
 * opens, new opens are page-cache opens too.
 *
 * What a payload is checked against (inode, size, mtime, ctime) is checked
 * at each open here, where the C read path checks it at each read.
 *
 * The records are used by the reader and by the thread that runs libfuse
 * and Python (`fuse_reply_open`): a lock keeps them apart (`rlock`, taken
 * before the slots' own, never under it).
 *
 * This file calls `_libslots.c` and `_libfastlookup.c`, never the files
 * above it; the slots tell it what it must hear through the hooks it
 * registers at load (`register_hooks`). The contract is `_libprodfs.h`.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#define FUSE_USE_VERSION 31
#include <fuse_lowlevel.h>

#include "_libprodfs.h"

#define INODE_MASK (PRODFS_PASSTHROUGH_BIT - 1)

/* The parts of the kernel's protocol (7.40) that libfuse 3.14's headers predate. */
#define OP_LOOKUP 1
#define OP_OPEN 14
#define OP_RELEASE 18
#define OP_INIT 26
#define INIT_WRITEBACK_CACHE (1u << 16)
#define INIT_EXT (1u << 30)
#define INIT2_PASSTHROUGH (1u << 5) /* FUSE_PASSTHROUGH, bit 37 of the 64 flags */
#define OPEN_NOFLUSH (1u << 5)
#define OPEN_PASSTHROUGH (1u << 7)
#define WRITE_FLAGS (O_WRONLY | O_RDWR | O_CREAT | O_TRUNC | O_APPEND)
#define FUSE_MAX_PAGES_READ 256 /* libfuse's FUSE_MAX_MAX_PAGES: its buffer is this many pages plus 4 KiB */

struct in_header {
    uint32_t len, opcode;
    uint64_t unique, nodeid;
    uint32_t uid, gid, pid;
    uint16_t total_extlen, padding;
};
struct out_header {
    uint32_t len;
    int32_t error;
    uint64_t unique;
};
struct init_in {
    uint32_t major, minor, max_readahead, flags, flags2;
};
struct init_out {
    uint32_t major, minor, max_readahead, flags;
    uint16_t max_background, congestion_threshold;
    uint32_t max_write, time_gran;
    uint16_t max_pages, map_alignment;
    uint32_t flags2, max_stack_depth;
};
struct attr_out {
    uint64_t ino, size, blocks, atime, mtime, ctime;
    uint32_t atimensec, mtimensec, ctimensec, mode, nlink, uid, gid, rdev, blksize, flags;
};
struct entry_out {
    uint64_t nodeid, generation, entry_valid, attr_valid;
    uint32_t entry_valid_nsec, attr_valid_nsec;
    struct attr_out attr;
};
struct open_in {
    uint32_t flags, open_flags;
};
struct open_out {
    uint64_t fh;
    uint32_t open_flags;
    int32_t backing_id;
};
struct release_in {
    uint64_t fh;
};
struct backing_map {
    int32_t fd;
    uint32_t flags;
    uint64_t padding;
};
#define IOC_BACKING_OPEN _IOW(229, 1, struct backing_map)
#define IOC_BACKING_CLOSE _IOW(229, 2, uint32_t)

/* Set from Python before pyfuse3.init: 1 to offer passthrough to the kernel. */
int prodfs_passthrough_want;
/* Read from Python: 1 once the kernel was told passthrough is wanted (and offered it); 0 again if
 * registering a file failed (not root, a cache the kernel cannot stack on): opens then go to the daemon. */
int prodfs_passthrough_active;
/* Read from Python: the errno of the registration that failed, if one did. */
int prodfs_passthrough_errno;
/* Read from Python: opens answered here, opens the daemon answered and passthrough took, opens that
 * fell back to the page cache, opens refused (changed while open), releases answered here. */
uint64_t prodfs_passthrough_counters[5];

typedef int (*reply_open_fn)(fuse_req_t, const struct fuse_file_info *);
typedef int (*mount_fn)(struct fuse_session *, const char *);
static reply_open_fn real_reply_open;
static mount_fn real_mount;

static struct fuse_session *attached; /* the session whose device I/O comes here */
static int stale = -1;                /* the placeholder fd, until the mount replaces it */
static int devfd = -1;                /* the session's /dev/fuse */
static uint64_t init_unique;
static int kernel_offers;

/* Records are used by the reader thread and by libfuse's (pyfuse3's) thread. */
static pthread_mutex_t rlock = PTHREAD_MUTEX_INITIALIZER;

/* Called by _libzeroopen.c's constructor with libfuse's handle: find libfuse's own functions, which
 * the ones below stand in front of. 1 when found: the library may stand in front of them. */
int prodfs_passthrough_resolved(void *lib)
{
    real_reply_open = (reply_open_fn)dlvsym(lib, "fuse_reply_open", "FUSE_3.0");
    real_mount = (mount_fn)dlvsym(lib, "fuse_session_mount", "FUSE_3.0");
    return real_reply_open != NULL && real_mount != NULL;
}

static void count(int which)
{
    __atomic_add_fetch(&prodfs_passthrough_counters[which], 1, __ATOMIC_RELAXED);
}

struct record {
    uint64_t ino;
    int passthrough, cached; /* opens in each mode */
    struct blobfile *file;   /* the passthrough opens' file (a reference), while there are any */
    int fd;                  /* and an fd on it, to check it has not changed */
    struct record *next;
    struct record *idle_prev, *idle_next; /* in `idle` while the inode has no open */
};
#define BUCKETS (1u << 14)
static struct record *records[BUCKETS];

/*
 * Records of payload inodes with no open left, least recently closed first, kept with their file
 * and fd: the next open of the same file then costs one fstat instead of an open and a close. At
 * most IDLE_MAX (fds), and never one whose file left the cache (`dropped`).
 */
#define IDLE_MAX 2048
static struct record idle = {.idle_prev = &idle, .idle_next = &idle};
static int idles;

enum { ASK_DAEMON, PASS, KEEP_CACHE, REFUSE };

static struct record **slot_of(uint64_t ino)
{
    struct record **p = &records[(ino * UINT64_C(0x9E3779B97F4A7C15)) >> 50];

    while (*p != NULL && (*p)->ino != ino)
        p = &(*p)->next;
    return p;
}

static struct record *record_for(uint64_t ino)
{
    struct record **p = slot_of(ino);

    if (*p == NULL && (*p = calloc(1, sizeof(**p))) != NULL) {
        (*p)->ino = ino;
        (*p)->fd = -1;
    }
    return *p;
}

static void unidle(struct record *r)
{
    r->idle_prev->idle_next = r->idle_next;
    r->idle_next->idle_prev = r->idle_prev;
    r->idle_prev = r->idle_next = NULL;
    idles--;
}

static void drop_record(struct record *r)
{
    struct record **p = slot_of(r->ino);

    if (r->idle_next != NULL)
        unidle(r);
    *p = r->next;
    if (r->file != NULL)
        prodfs_slots_unref(r->file);
    if (r->fd >= 0)
        close(r->fd);
    free(r);
}

/* One open of `ino` in mode `how` (PASS or KEEP_CACHE) is over; with `rlock` held. */
static void closed(uint64_t ino, int how)
{
    struct record *r = *slot_of(ino);

    if (r == NULL)
        return;
    if (how == PASS && r->passthrough > 0)
        r->passthrough--;
    else if (how == KEEP_CACHE && r->cached > 0)
        r->cached--;
    if (r->passthrough > 0 || r->cached > 0)
        return;
    if (r->fd < 0 || !prodfs_slots_same(r->fd, r->file, 1)) {
        drop_record(r); /* evicted or changed: its space and its fd go now */
        return;
    }
    if (idles >= IDLE_MAX)
        drop_record(idle.idle_next);
    r->idle_prev = idle.idle_prev;
    r->idle_next = &idle;
    idle.idle_prev->idle_next = r;
    idle.idle_prev = r;
    idles++;
}

/* A hook of `_libslots.c` (`prodfs_fastread_drop`): `f` left the cache; idle records let it go. */
static void dropped(struct blobfile *f)
{
    pthread_mutex_lock(&rlock);
    for (struct record *r = idle.idle_next, *next; r != &idle; r = next) {
        next = r->idle_next;
        if (r->file == f)
            drop_record(r);
    }
    pthread_mutex_unlock(&rlock);
}

static void forget_open(uint64_t ino, int how)
{
    pthread_mutex_lock(&rlock);
    closed(ino, how);
    pthread_mutex_unlock(&rlock);
}

/* Give `f` (open as `fd`) a passthrough id, once per payload file; 0 if the kernel refuses. */
static int registered(struct blobfile *f, int fd)
{
    struct backing_map m = {.fd = fd};
    int id;

    if (f->backing > 0)
        return 1;
    if (!prodfs_passthrough_active)
        return 0;
    id = ioctl(devfd, IOC_BACKING_OPEN, &m);
    if (id <= 0) {
        /* Not root, or a cache on a filesystem the kernel will not stack on: every file would fail. */
        prodfs_passthrough_errno = id < 0 ? errno : EINVAL;
        prodfs_passthrough_active = 0;
        return 0;
    }
    f->backing = id; /* before our reference goes: `unref`'s lock publishes it */
    return 1;
}

/*
 * How to open `ino`, with `rlock` held. PASS fills `*backing` and counts the open in the inode's
 * record; KEEP_CACHE counts it in page-cache mode; ASK_DAEMON: the daemon decides.
 */
static int choose(uint64_t ino, int32_t *backing)
{
    struct record *r = *slot_of(ino);
    struct blobfile *f;
    int fd;

    if (r != NULL && r->idle_next != NULL) {
        unidle(r);
        if (!prodfs_slots_same(r->fd, r->file, 1)) {
            drop_record(r);
            r = NULL;
        }
    }
    if (r != NULL) {
        if (r->cached > 0)
            return KEEP_CACHE;
        /* The kernel keeps the inode on the file its open files use: the same one, if unchanged.
         * (An idle record was checked above, with the cache: it has no open files.) */
        if (r->passthrough > 0 && !prodfs_slots_same(r->fd, r->file, 0))
            return REFUSE;
        r->passthrough++;
        *backing = r->file->backing;
        prodfs_slots_used(r->file);
        return PASS;
    }
    if ((f = prodfs_slots_acquire(ino, 0)) == NULL)
        return ASK_DAEMON;
    /* An fd for as long as the inode is open (and a while after): the slot itself keeps none
     * (there may be tens of thousands of slots), and later opens check that this file is unchanged. */
    if ((fd = prodfs_slots_open_checked(f)) < 0) {
        prodfs_slots_failed(f); /* the daemon checks or fetches it, and registers it again */
        return ASK_DAEMON;
    }
    if (!registered(f, fd) || (r = record_for(ino)) == NULL) {
        close(fd);
        prodfs_slots_unref(f);
        return ASK_DAEMON;
    }
    r->passthrough = 1;
    r->file = f;
    r->fd = fd;
    *backing = f->backing;
    prodfs_slots_used(f);
    return PASS;
}

/* Write a reply; 0 if the kernel no longer waits for it (an interrupted open: no RELEASE follows). */
static int reply(uint64_t unique, int error, const void *arg, size_t len)
{
    struct out_header out = {(uint32_t)(sizeof(out) + len), -error, unique};
    struct iovec iov[2] = {{&out, sizeof(out)}, {(void *)arg, len}};

    return writev(devfd, iov, len ? 2 : 1) >= 0 || errno != ENOENT;
}

static void split_timeout(double t, uint64_t *sec, uint32_t *nsec)
{
    *sec = t <= 0.0 ? 0 : t >= 1e18 ? UINT64_C(1000000000000000000) : (uint64_t)t;
    *nsec = t <= 0.0 || t >= 1e18 ? 0 : (uint32_t)((t - (double)*sec) * 1e9);
}

/* A LOOKUP inside a version whose directory the daemon handed over (as libfuse would encode it). */
static int answer_lookup(const struct in_header *h, const char *name, size_t room)
{
    size_t len = strnlen(name, room);
    struct fuse_entry_param e;
    struct entry_out out = {0};
    const struct stat *st = &e.attr;

    if (len == room || !prodfs_fastlookup_find(h->nodeid, name, len, &e))
        return 0;
    out.nodeid = e.ino;
    out.generation = e.generation;
    split_timeout(e.entry_timeout, &out.entry_valid, &out.entry_valid_nsec);
    split_timeout(e.attr_timeout, &out.attr_valid, &out.attr_valid_nsec);
    out.attr = (struct attr_out){
        .ino = st->st_ino, .size = (uint64_t)st->st_size, .blocks = (uint64_t)st->st_blocks,
        .atime = (uint64_t)st->st_atim.tv_sec, .mtime = (uint64_t)st->st_mtim.tv_sec, .ctime = (uint64_t)st->st_ctim.tv_sec,
        .atimensec = (uint32_t)st->st_atim.tv_nsec, .mtimensec = (uint32_t)st->st_mtim.tv_nsec,
        .ctimensec = (uint32_t)st->st_ctim.tv_nsec, .mode = st->st_mode, .nlink = (uint32_t)st->st_nlink,
        .uid = st->st_uid, .gid = st->st_gid, .rdev = (uint32_t)st->st_rdev, .blksize = (uint32_t)st->st_blksize,
    };
    reply(h->unique, 0, &out, sizeof(out));
    return 1;
}

/* A request answered here: 1, or 0 to hand it to libfuse. */
static int answer(const char *buf, size_t n)
{
    const struct in_header *h = (const struct in_header *)buf;
    int how, done = 1;

    if (h->opcode == OP_LOOKUP && n > sizeof(*h))
        return answer_lookup(h, buf + sizeof(*h), n - sizeof(*h));

    if (h->opcode == OP_OPEN && n >= sizeof(*h) + sizeof(struct open_in) &&
        __atomic_load_n(&prodfs_passthrough_active, __ATOMIC_RELAXED)) {
        const struct open_in *in = (const struct open_in *)(buf + sizeof(*h));
        struct open_out out = {.fh = h->nodeid | PRODFS_PASSTHROUGH_BIT, .open_flags = OPEN_PASSTHROUGH | OPEN_NOFLUSH};

        if (in->flags & WRITE_FLAGS)
            return 0; /* the daemon says EROFS */
        pthread_mutex_lock(&rlock);
        how = choose(h->nodeid, &out.backing_id);
        if (how == REFUSE) {
            count(3);
            reply(h->unique, EIO, NULL, 0);
        } else if (how == PASS) {
            count(0);
            if (!reply(h->unique, 0, &out, sizeof(out)))
                closed(h->nodeid, PASS);
        } else {
            done = 0;
        }
        pthread_mutex_unlock(&rlock);
        return done;
    }
    if (h->opcode == OP_RELEASE && n >= sizeof(*h) + sizeof(struct release_in)) {
        uint64_t fh = ((const struct release_in *)(buf + sizeof(*h)))->fh;

        if (!(fh & (PRODFS_PASSTHROUGH_BIT | PRODFS_INODE_BIT)) || (fh & INODE_MASK) != h->nodeid)
            return 0; /* a handle of the daemon's */
        pthread_mutex_lock(&rlock);
        closed(h->nodeid, fh & PRODFS_PASSTHROUGH_BIT ? PASS : KEEP_CACHE);
        pthread_mutex_unlock(&rlock);
        count(4);
        reply(h->unique, 0, NULL, 0);
        return 1;
    }
    return 0;
}

static void note_init(const char *buf, size_t n)
{
    const struct in_header *h = (const struct in_header *)buf;
    const struct init_in *in = (const struct init_in *)(buf + sizeof(*h));

    if (h->opcode != OP_INIT || n < sizeof(*h) + sizeof(*in))
        return;
    __atomic_store_n(&kernel_offers, (in->flags & INIT_EXT) && (in->flags2 & INIT2_PASSTHROUGH), __ATOMIC_RELAXED);
    __atomic_store_n(&init_unique, h->unique, __ATOMIC_RELEASE);
}

/*
 * The reader: one thread owns the device. It answers what it can and queues the rest for pyfuse3,
 * whose loop waits on an eventfd put in the device's place (`fuse_session_mount` below). An answer
 * given here never touches Python: about 70 us of pyfuse3's loop saved per request.
 */
struct msg {
    struct msg *next;
    size_t len;
    char data[];
};
static pthread_mutex_t qlock = PTHREAD_MUTEX_INITIALIZER;
static struct msg *qhead, **qtail = &qhead;
static int reader_gone; /* the errno that ended the reader (ENODEV: unmounted) */
static int wake = -1;   /* the reader's own fd on the eventfd */
static int reader_on;

static void hand_over(struct msg *m, int gone)
{
    uint64_t one = 1;

    pthread_mutex_lock(&qlock);
    if (m != NULL) {
        *qtail = m;
        qtail = &m->next;
    } else {
        reader_gone = gone;
    }
    pthread_mutex_unlock(&qlock);
    while (write(wake, &one, sizeof(one)) < 0 && errno == EINTR)
        ;
}

static void *reader(void *arg)
{
    size_t size = (size_t)(uintptr_t)arg;
    char *buf = malloc(size);

    for (;;) {
        ssize_t n = buf == NULL ? -1 : read(devfd, buf, size);
        struct msg *m;

        if (n < 0 && (errno == EINTR || errno == EAGAIN || errno == ENOENT))
            continue; /* ENOENT: the request was interrupted before it was read */
        if (n < (ssize_t)sizeof(struct in_header)) {
            hand_over(NULL, n < 0 && buf != NULL ? errno : EIO);
            break;
        }
        note_init(buf, (size_t)n);
        if (answer(buf, (size_t)n))
            continue;
        if ((m = malloc(sizeof(*m) + (size_t)n)) == NULL) {
            hand_over(NULL, ENOMEM);
            break;
        }
        m->next = NULL;
        m->len = (size_t)n;
        memcpy(m->data, buf, (size_t)n);
        hand_over(m, 0);
    }
    free(buf);
    return NULL;
}

/* libfuse reads each request through here: from the reader's queue, or from the device itself. */
static ssize_t io_read(int fd, void *buf, size_t len, void *userdata)
{
    uint64_t one;
    struct msg *m;
    int gone;

    (void)userdata;
    if (!reader_on) { /* no reader thread: the device, answering here what can be */
        ssize_t n = read(fd, buf, len);

        if (n >= (ssize_t)sizeof(struct in_header)) {
            note_init(buf, (size_t)n);
            if (answer(buf, (size_t)n)) {
                errno = EINTR; /* pyfuse3 waits for the next one */
                return -1;
            }
        }
        return n;
    }
    if (read(fd, &one, sizeof(one)) != sizeof(one)) {
        errno = EINTR; /* woken for nothing: pyfuse3 waits again */
        return -1;
    }
    pthread_mutex_lock(&qlock);
    if ((m = qhead) != NULL && (qhead = m->next) == NULL)
        qtail = &qhead;
    gone = reader_gone;
    pthread_mutex_unlock(&qlock);
    if (m == NULL) {
        errno = gone ? gone : EINTR; /* ENODEV ends the session, as a read of the device would */
        return -1;
    }
    if (m->len > len) { /* cannot happen: the reader reads no more than libfuse would */
        free(m);
        errno = EIO;
        return -1;
    }
    memcpy(buf, m->data, m->len);
    len = m->len;
    free(m);
    return (ssize_t)len;
}

static ssize_t io_writev(int fd, struct iovec *iov, int count, void *userdata)
{
    uint64_t init = __atomic_load_n(&init_unique, __ATOMIC_ACQUIRE);

    (void)fd; /* the eventfd, once the reader runs: replies go to the device */
    (void)userdata;
    /* (notifications carry unique 0: never taken for the INIT reply) */
    if (init != 0 && count == 2 && iov[0].iov_len == sizeof(struct out_header) &&
        ((struct out_header *)iov[0].iov_base)->unique == init) {
        struct out_header *out = iov[0].iov_base;
        struct init_out *arg = iov[1].iov_base;

        init_unique = 0;
        if (out->error == 0 && iov[1].iov_len >= sizeof(*arg) && kernel_offers && prodfs_passthrough_want &&
            !(arg->flags & INIT_WRITEBACK_CACHE)) {
            arg->flags |= INIT_EXT;
            arg->flags2 |= INIT2_PASSTHROUGH;
            arg->max_stack_depth = 1; /* the cache is on a plain filesystem (depth 0) */
            __atomic_store_n(&prodfs_passthrough_active, 1, __ATOMIC_RELEASE);
        }
    }
    return writev(devfd, iov, count);
}

static const struct fuse_custom_io io = {.writev = io_writev, .read = io_read};

/* Called by `fuse_session_new` in _libzeroopen.c: route the session's device I/O through here. */
void prodfs_passthrough_attach(struct fuse_session *se)
{
    int placeholder;

    if (!prodfs_passthrough_want || real_reply_open == NULL || real_mount == NULL) {
        prodfs_passthrough_want = 0;
        return;
    }
    /* libfuse wants an fd now; fuse_session_mount replaces it with the device (and closes neither). */
    placeholder = open("/dev/null", O_RDWR | O_CLOEXEC);
    if (placeholder < 0 || fuse_session_custom_io(se, &io, placeholder) != 0) {
        prodfs_passthrough_want = 0;
        if (placeholder >= 0)
            close(placeholder);
        return;
    }
    attached = se;
    stale = placeholder;
}

/*
 * pyfuse3 mounts through here. With the custom I/O attached, the device gets its reader thread;
 * the fd number libfuse and pyfuse3 know becomes an eventfd the reader signals for each request it
 * queues. Without a thread (it could not start), libfuse reads the device as usual.
 */
int fuse_session_mount(struct fuse_session *se, const char *mountpoint)
{
    int res = real_mount(se, mountpoint), fd, efd = -1;
    pthread_t thread;
    pthread_attr_t attr;

    if (res != 0 || se != attached)
        return res;
    if (stale >= 0)
        close(stale);
    stale = -1;
    fd = fuse_session_fd(se);
    /* The device under a new number, kept for the life of the process: threads may still reply. */
    if ((devfd = fcntl(fd, F_DUPFD_CLOEXEC, 3)) < 0) {
        devfd = fd;
        return res;
    }
    if ((efd = eventfd(0, EFD_SEMAPHORE | EFD_NONBLOCK | EFD_CLOEXEC)) < 0 ||
        (wake = fcntl(efd, F_DUPFD_CLOEXEC, 3)) < 0 || dup3(efd, fd, O_CLOEXEC) < 0) {
        if (efd >= 0)
            close(efd);
        if (wake >= 0)
            close(wake);
        wake = -1;
        close(devfd);
        devfd = fd;
        return res;
    }
    close(efd);
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    reader_on = 1;
    /* as large as libfuse's own buffer: the largest request the kernel sends */
    if (pthread_create(&thread, &attr, reader, (void *)(uintptr_t)(FUSE_MAX_PAGES_READ * (size_t)getpagesize() + 4096)) != 0) {
        /* the fd is an eventfd now: put the device back under it */
        reader_on = 0;
        dup3(devfd, fd, O_CLOEXEC);
    }
    pthread_attr_destroy(&attr);
    return res;
}

/*
 * pyfuse3 replies to the daemon's opens through here. A handle tagged PRODFS_PASSTHROUGH_BIT is
 * the daemon asking for passthrough: it has just registered the payload with the C read path.
 */
int fuse_reply_open(fuse_req_t req, const struct fuse_file_info *fi)
{
    struct fuse_file_info copy;
    struct record *r;
    struct open_out out = {.open_flags = OPEN_PASSTHROUGH | OPEN_NOFLUSH, .fh = fi->fh};
    uint64_t ino = fi->fh & INODE_MASK;
    struct iovec iov = {&out, sizeof(out)};
    int how;

    if (!(fi->fh & PRODFS_PASSTHROUGH_BIT))
        return real_reply_open(req, fi);
    pthread_mutex_lock(&rlock);
    how = choose(ino, &out.backing_id);
    if (how == PASS) {
        count(1);
    } else if (how == REFUSE) {
        count(3);
    } else if ((r = record_for(ino)) != NULL) { /* the page cache, as without passthrough */
        count(2);
        r->cached++;
    } else {
        how = REFUSE;
    }
    pthread_mutex_unlock(&rlock);
    if (how == REFUSE)
        return fuse_reply_err(req, EIO);
    if (how == PASS) {
        if (fuse_reply_iov(req, &iov, 1) == -ENOENT)
            forget_open(ino, PASS);
        return 0;
    }
    copy = *fi;
    copy.fh = ino | PRODFS_INODE_BIT; /* its RELEASE comes back here */
    copy.keep_cache = 1;
    if (real_reply_open(req, &copy) == -ENOENT)
        forget_open(ino, KEEP_CACHE);
    return 0;
}

/* A hook of `_libslots.c`: the last reference to the file that had passthrough id `backing` went
 * (with the slots' lock held: no lock here). Open files keep the backing file in the kernel. */
static void backing_gone(int backing)
{
    uint32_t id = (uint32_t)backing;

    if (devfd >= 0)
        ioctl(devfd, IOC_BACKING_CLOSE, &id);
}

/* Registered before any thread of the library exists: the slots tell this file when a file with a
 * passthrough id is gone and when a file left the cache, without calling up into it. */
__attribute__((constructor)) static void register_hooks(void)
{
    static const struct prodfs_slots_hooks hooks = {.backing_gone = backing_gone, .dropped = dropped};

    prodfs_slots_set_hooks(&hooks);
}

/*
 * The contract between the C files of `prodfs.kernel._libzeroopen`: every
 * function, structure and variable one file gives another, and who owns
 * which thread, lock and fd. docs/kernel.md says what each path answers and
 * how to turn it off.
 *
 * One file per job, each depending only on the files below it:
 *
 *   _libzeroopen.c     the session: pyfuse3's operations wrapped (zero-message opens)
 *     |-> _libpassthrough.c   the device's reader thread and passthrough opens
 *     |     |-> _libfastlookup.c
 *     |     '-> _libslots.c
 *     |-> _libfastread.c      READ answered on threads of its own
 *     |     '-> _libslots.c
 *     '-> _libfastlookup.c    LOOKUP inside versions (a table; depends on no other file)
 *   _libslots.c        the payload files the daemon verified (depends on no other file)
 *
 * No file calls a file above it. Where a lower file must tell a higher one
 * something (a payload file is gone, so its passthrough id must be closed),
 * the higher one registers a hook at load time (`prodfs_slots_set_hooks`): the
 * lower file knows only a function pointer, and without the hook it works
 * alone.
 *
 * Threads. Three kinds run this code, and no other:
 *  - the daemon's thread: trio, pyfuse3's loop and so every libfuse callback
 *    (the wrapped `read`, `lookup`, `readdirplus`, and `fuse_reply_open`), and
 *    every call from Python (ctypes);
 *  - the read threads of `_libfastread.c` (started and joined from Python):
 *    `pread`, reply and drop their reference to the payload file (which, if
 *    it was the last, closes the file and its passthrough id);
 *  - the reader of `_libpassthrough.c`: one detached thread that owns the
 *    device's reads, started at mount when passthrough is wanted, ending when
 *    the device does (ENODEV at unmount).
 * So everything two of them share is under a lock or atomic (counters, a
 * slot's fd, the flags Python sets before the session starts).
 *
 * Locks, outermost first (a thread holding one never takes one above it):
 *   passthrough's `rlock` (its open records) > the slots' lock;
 *   the read queue's lock, the reader's queue lock and the lookup table's
 *   lock are leaves: nothing else is taken under them.
 * Hence `prodfs_slots_hooks.dropped` is called without the slots' lock (it
 * takes `rlock`), and `.backing_gone`, called with it, takes no lock.
 *
 * Fds, and who closes them:
 *  - a slot's own fd (`struct blobfile.fd`): opened by the first C read of
 *    its file, at most `prodfs_fastread_max_fds` of them (past that the
 *    daemon reads), closed by _libslots.c with the file's last reference;
 *  - a passthrough record's fd: opened and checked by _libpassthrough.c at
 *    the first passthrough open of an inode, kept while it is open and for
 *    up to 2,048 idle inodes after (so that the next open costs an fstat),
 *    closed when the record goes (the file changed, left the cache, or the
 *    idle list is full);
 *  - a passthrough id (`struct blobfile.backing`): registered by
 *    _libpassthrough.c on the record's fd at the file's first passthrough
 *    open, closed through `backing_gone` at the file's last reference; the
 *    kernel's open files hold their backing file themselves, so closing the
 *    id never cuts off a reader;
 *  - the device: _libpassthrough.c keeps its own dup of /dev/fuse for the
 *    life of the process (threads may still reply after pyfuse3 closed its
 *    fd), and puts an eventfd under the number libfuse and pyfuse3 know;
 *  - every other fd (the daemon's handles, the cache's) is Python's.
 *
 * Everything Python reads or calls is also named in `_libzeroopen.map`
 * (every other symbol is local to the library), in `_zeroopen.py` and in
 * `_fastpath.py`: a change to one of them is a change to all three.
 */
#ifndef PRODFS_LIBPRODFS_H
#define PRODFS_LIBPRODFS_H

#ifndef FUSE_USE_VERSION
#define FUSE_USE_VERSION 31
#endif
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <fuse_lowlevel.h>

/*
 * File handles the library makes. pyfuse3's own handles are small counters,
 * far below both bits, so a handle with one set never is the daemon's.
 *  INODE_BIT: "no handle, this is the inode" (the handle of a READ or
 *    READDIRPLUS after a zero-message open, put there by `_libzeroopen.c`;
 *    and of a page-cache open `_libpassthrough.c` answered). `_zeroopen.INODE_BIT`.
 *  PASSTHROUGH_BIT: the daemon's answer to OPEN asking for passthrough
 *    (`fuse_reply_open`), and the handle of an open answered in passthrough.
 *    `_fastpath.PASSTHROUGH_BIT`.
 */
#define PRODFS_INODE_BIT (UINT64_C(1) << 62)
#define PRODFS_PASSTHROUGH_BIT (UINT64_C(1) << 61)

/* ---- _libslots.c: the payload files the daemon verified ----------------------------------------
 *
 * Two tables, filled from Python (`_fastpath.FastReads`): slots, a verified payload file each, and
 * a direct-mapped map from inode to (slot, generation). Both the read path and passthrough opens
 * borrow a slot's file from here, with the same check: the file still has the signature (inode,
 * size, mtime, ctime) it was verified with, and is still linked. The Python-facing names keep the
 * `prodfs_fastread_` prefix of the class that fills them.
 */
struct blobfile {
    uint32_t slot;
    int fd;      /* the slot's own fd, for reads: -1 until the first read opens `path` (atomically: two
                  * threads may); closed with the blobfile. Passthrough never uses it (it opens its own). */
    char *path;  /* the payload file */
    int refs;    /* under the slots' lock: the slot's, plus one per read in flight, per passthrough record,
                  * per borrower between acquire and unref */
    int backing; /* owned by _libpassthrough.c (set under `rlock`, while it holds a reference): the kernel's
                  * passthrough id for this file, 0 before its first passthrough open. The last unref
                  * hands it to `backing_gone` (the slots' lock publishes it). */
    uint64_t size, ino, mtime_ns, ctime_ns; /* the signature it was verified with; fixed */
};

/* `ino`'s payload file, with a reference taken; NULL when it has none (or the read path is not
 * started). `need_fd`: open the slot's own fd (for reads; not past `prodfs_fastread_max_fds`) and
 * check it; NULL if the check failed (the slot is then emptied, counted as a fallback, and the
 * daemon decides). Without `need_fd` the caller checks a file of its own. Any thread. */
struct blobfile *prodfs_slots_acquire(uint64_t ino, int need_fd);
/* Drop a reference; at the last one the fd is closed and `backing_gone` told. Any thread, without
 * the slots' lock. */
void prodfs_slots_unref(struct blobfile *f);
/* `f` failed its check: empty its slot (if it still holds `f`), count a fallback, drop the reference. */
void prodfs_slots_failed(struct blobfile *f);
/* 1 if the file behind `fd` has the contents `f` was verified with; `linked`: and is still in the cache. */
int prodfs_slots_same(int fd, const struct blobfile *f, int linked);
/* A new fd on `f`'s file, checked; -1 if it cannot be opened or changed. The caller owns it. */
int prodfs_slots_open_checked(const struct blobfile *f);
/* Counts a read or an open as a use of `f`'s payload, for the cache's LRU (`prodfs_fastread_slot_reads`). */
void prodfs_slots_used(const struct blobfile *f);

/* Lent only while the read path runs: `_libfastread.c` enables the slots once its threads are up,
 * disables them before it stops them, and clears them (every slot emptied, the map reset) after. */
void prodfs_slots_enable(void);
void prodfs_slots_disable(void);
void prodfs_slots_clear(void);

/* What a higher file is told; set once, at load, before any thread of the library exists. */
struct prodfs_slots_hooks {
    /* The last reference to a file with a passthrough id went: close the id. Called with the slots'
     * lock held (so it takes no lock); from any thread. */
    void (*backing_gone)(int backing);
    /* `f` left the cache (`prodfs_fastread_drop`: evicted, or found corrupt): let go of any reference
     * kept for later opens. Called on the daemon's thread, without the slots' lock, `f` referenced
     * for the call. */
    void (*dropped)(struct blobfile *f);
};
void prodfs_slots_set_hooks(const struct prodfs_slots_hooks *hooks);

/* From Python (`FastReads`), on the daemon's thread; `prodfs_fastread_put` through `_put_many`. */
int64_t prodfs_fastread_put(uint32_t s, const char *path, uint64_t size, uint64_t ino, uint64_t mtime_ns,
                            uint64_t ctime_ns);
void prodfs_fastread_drop(uint32_t s);
int prodfs_fastread_map(uint64_t inode, uint32_t s, uint32_t gen);
/* Many payloads at once (a directory's, when its listing is handed over): one call instead of two
 * per payload, each of which costs Python more than the work done here. Record i fills slot
 * `slot` with the file at `paths + path_off` (NUL-terminated) and maps `inode` to it; with
 * `path_off` PRODFS_MAP_ONLY it only maps `inode`, to what the earlier record of the batch whose
 * index is in `slot` filled (the same payload), if that one was filled. `gens[i]`: the generation
 * mapped, or -1 (not filled, or emptied meanwhile). */
#define PRODFS_MAP_ONLY UINT32_MAX
struct prodfs_slot_rec {
    uint64_t inode, size, ino, mtime_ns, ctime_ns;
    uint32_t slot, path_off;
};
/* Python packs these (`prodfs.kernel._fastpath`): their layout is fixed, without padding. */
_Static_assert(sizeof(struct prodfs_slot_rec) == 48, "struct prodfs_slot_rec is packed by Python");
void prodfs_fastread_put_many(const struct prodfs_slot_rec *recs, uint32_t n, const char *paths, int64_t *gens);
int prodfs_fastread_max_slots(void);
/* Set from Python: how many slots may hold their own fd open for reads. */
extern int prodfs_fastread_max_fds;
/* Read from Python: reads served, bytes, fallbacks (a failed check, whoever found it: counted here),
 * errors. `_libfastread.c` counts [0], [1] and [3]. */
extern uint64_t prodfs_fastread_counters[4];
/* Read from Python: uses per slot (reads and passthrough opens), for the cache's LRU. */
extern uint32_t prodfs_fastread_slot_reads[];

/* ---- _libfastlookup.c: LOOKUP inside versions ---------------------------------------------------- */

/* The entry the daemon handed over for (parent, name) into `*e`: 1, counted as answered; 0 if the
 * daemon must answer. Any thread (the daemon's, or passthrough's reader). */
int prodfs_fastlookup_find(uint64_t parent, const char *name, size_t len, struct fuse_entry_param *e);
/* For the wrapped `lookup`, on the daemon's thread: 1 if answered (replied) here, 0 for pyfuse3. */
int prodfs_fastlookup(fuse_req_t req, fuse_ino_t parent, const char *name);

/* From Python (`FastLookups`), on the daemon's thread. */
int prodfs_fastlookup_start(void);
/* The entries of one directory, a batch at a time (one call and one lock for them all): record i
 * names `names[name_off:name_off + name_len]`, with the attributes the daemon would answer. */
struct prodfs_lookup_rec {
    uint64_t ino, size;
    int64_t t_ns;
    double entry_timeout, attr_timeout;
    uint32_t mode, uid, gid, blksize, name_off, name_len;
};
_Static_assert(sizeof(struct prodfs_lookup_rec) == 64, "struct prodfs_lookup_rec is packed by Python");
void prodfs_fastlookup_put_many(uint64_t parent, const struct prodfs_lookup_rec *recs, uint32_t n, const char *names);
void prodfs_fastlookup_stop(void);
extern uint64_t prodfs_fastlookup_answered;

/* ---- _libfastread.c: READ answered on threads of its own ----------------------------------------- */

/* For the wrapped `read`, on the daemon's thread: 1 if the read was taken (a read thread replies), 0
 * for pyfuse3. */
int prodfs_fastread(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off);

/* From Python: start `n` threads (0 on success); stop answers what is queued, joins them and clears
 * the slots, before the session goes. */
int prodfs_fastread_start(int n);
void prodfs_fastread_stop(void);

/* ---- _libpassthrough.c: the device's reader and passthrough opens -------------------------------- */

/* Called by _libzeroopen.c's constructor with libfuse's handle: 1 when libfuse's own functions that
 * this file stands in front of (`fuse_reply_open`, `fuse_session_mount`) were found. */
int prodfs_passthrough_resolved(void *libfuse);
/* Called by `fuse_session_new` in _libzeroopen.c, on the daemon's thread: route the new session's
 * device I/O through this file, when passthrough is wanted. */
void prodfs_passthrough_attach(struct fuse_session *se);

/* Set from Python before pyfuse3.init: 1 to offer passthrough to the kernel. */
extern int prodfs_passthrough_want;
/* Read from Python: 1 once passthrough was agreed with the kernel; 0 again if registering a file failed. */
extern int prodfs_passthrough_active;
/* Read from Python: the errno of the registration that failed, if one did. */
extern int prodfs_passthrough_errno;
/* Read from Python: opens answered here, opens the daemon answered and passthrough took, page-cache
 * fallbacks, opens refused, releases answered here. */
extern uint64_t prodfs_passthrough_counters[5];

/* ---- _libzeroopen.c: the session --------------------------------------------------------------- */

/* Read from Python: 1 when libfuse's own fuse_session_new (and the others) were found. */
extern int prodfs_zeroopen_ready;
/* Read from Python: 1 once a session was created with the wrapped operations. */
extern int prodfs_zeroopen_sessions;

#endif

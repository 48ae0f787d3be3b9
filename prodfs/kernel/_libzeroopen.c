/*
 * Zero-message opens for ProdFS: the kernel keeps listings and contents
 * without asking the daemon on every open.
 *
 * When a filesystem answers OPEN (or OPENDIR) with ENOSYS, the kernel stops
 * sending OPEN and RELEASE (OPENDIR and RELEASEDIR) for the life of the mount,
 * opens files with FOPEN_KEEP_CACHE and directories with FOPEN_CACHE_DIR too:
 * a warm open, read and close, or a warm listing, never leaves the kernel.
 * READ and READDIRPLUS then arrive with file handle 0, and pyfuse3 gives
 * `read` and `readdir` the handle but not the inode, so a pyfuse3 filesystem
 * could not tell which file or directory they are for.
 *
 * This library is loaded with RTLD_GLOBAL before pyfuse3, so its
 * `fuse_session_new` is the one pyfuse3 binds to. It gives libfuse a copy of
 * pyfuse3's operations whose `read` and `readdirplus` first replace a zero
 * handle with the inode number tagged with PRODFS_INODE_BIT, then call
 * pyfuse3's own. Nothing else changes, except that `read` first offers the
 * request to `_libfastread.c`, which answers reads of registered payloads on
 * its own threads, and `lookup` to `_libfastlookup.c`, which answers names
 * inside versions whose directories the daemon has listed. The session's
 * device I/O then goes through `_libpassthrough.c`, which answers opens of
 * verified payloads with the cache's own files when the kernel can.
 *
 * Compiled against the same fuse3 headers as pyfuse3, so the layout of
 * `fuse_lowlevel_ops` and `fuse_file_info` is the one libfuse uses.
 *
 * The top of the library: it calls `_libfastread.c` (`prodfs_fastread`),
 * `_libfastlookup.c` (`prodfs_fastlookup`) and `_libpassthrough.c`
 * (`prodfs_passthrough_resolved`, `prodfs_passthrough_attach`), and none of
 * them calls it. The contract between the files is `_libprodfs.h`.
 */
#define FUSE_USE_VERSION 31
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <fuse_lowlevel.h>

#include "_libprodfs.h"

typedef struct fuse_session *(*session_new_fn)(struct fuse_args *, const struct fuse_lowlevel_ops *,
                                               size_t, void *);
typedef void (*read_fn)(fuse_req_t, fuse_ino_t, size_t, off_t, struct fuse_file_info *);

static session_new_fn real_session_new;
static read_fn real_read, real_readdirplus;
static struct fuse_lowlevel_ops wrapped_ops;

/* Read from Python: 1 when libfuse's own fuse_session_new (and the others) were found. */
int prodfs_zeroopen_ready;
/* 1 once a session was created with the wrapped operations. */
int prodfs_zeroopen_sessions;

__attribute__((constructor)) static void prodfs_zeroopen_resolve(void)
{
    /* The reference to fuse_version keeps libfuse3 a dependency of this library. */
    void *lib = fuse_version() >= 30 ? dlopen("libfuse3.so.3", RTLD_LAZY | RTLD_NOLOAD) : NULL;

    if (lib != NULL)
        real_session_new = (session_new_fn)dlvsym(lib, "fuse_session_new", "FUSE_3.0");
    prodfs_zeroopen_ready = real_session_new != NULL && prodfs_passthrough_resolved(lib);
}

static inline void tag_handle(fuse_ino_t ino, struct fuse_file_info *fi)
{
    if (fi != NULL && fi->fh == 0)
        fi->fh = (uint64_t)ino | PRODFS_INODE_BIT;
}

typedef void (*lookup_fn)(fuse_req_t, fuse_ino_t, const char *);
static lookup_fn real_lookup;

static void lookup_here_first(fuse_req_t req, fuse_ino_t parent, const char *name)
{
    if (!prodfs_fastlookup(req, parent, name))
        real_lookup(req, parent, name);
}

static void read_by_inode(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                          struct fuse_file_info *fi)
{
    if (prodfs_fastread(req, ino, size, off))
        return;
    tag_handle(ino, fi);
    real_read(req, ino, size, off, fi);
}

static void readdirplus_by_inode(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                                 struct fuse_file_info *fi)
{
    tag_handle(ino, fi);
    real_readdirplus(req, ino, size, off, fi);
}

struct fuse_session *fuse_session_new(struct fuse_args *args, const struct fuse_lowlevel_ops *op,
                                      size_t op_size, void *userdata)
{
    struct fuse_session *se;

    if (op_size == sizeof(wrapped_ops) && op->read != NULL && op->readdirplus != NULL && op->lookup != NULL) {
        memcpy(&wrapped_ops, op, op_size);
        real_read = op->read;
        real_readdirplus = op->readdirplus;
        real_lookup = op->lookup;
        wrapped_ops.read = read_by_inode;
        wrapped_ops.readdirplus = readdirplus_by_inode;
        wrapped_ops.lookup = lookup_here_first;
        op = &wrapped_ops;
        prodfs_zeroopen_sessions = 1;
        se = real_session_new(args, op, op_size, userdata);
        if (se != NULL)
            prodfs_passthrough_attach(se);
        return se;
    }
    return real_session_new(args, op, op_size, userdata);
}

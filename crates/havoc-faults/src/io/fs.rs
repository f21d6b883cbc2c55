//! The pass-through file system mounted over the volume: every operation is done on the original
//! directory, reached through a descriptor opened *before* the mount (so the mount never sees
//! itself), and the IOChaos rule may delay it, fail it, alter its attributes or its data.
//!
//! Inodes are mapped to paths relative to the volume (needed for the `path` glob anyway); every
//! system call is relative to the original directory's descriptor, never through the mount.
//!
//! Caching is decided per path, from what the rule can ever match there (its `path` glob and
//! `methods`, whatever `percent` draws; the rule never changes during an injection):
//! - a file whose reads or writes the rule can match is opened with `FOPEN_DIRECT_IO`, so each
//!   read and write of the application is one request here and every one of them meets the rule
//!   (no page cache hides reads from the fault); shared mmap keeps working through
//!   `FUSE_DIRECT_IO_ALLOW_MMAP`.
//! - any other file is opened in kernel passthrough (`FOPEN_PASSTHROUGH`, Linux 6.9+): its reads,
//!   writes and mmap go straight to the real file in the kernel, through the real file's own
//!   page cache, so nothing can be stale and everything written is in the real file at once.
//!   Where passthrough is not available, such a file uses the FUSE page cache instead, kept
//!   across opens (`FOPEN_KEEP_CACHE`) only while the real file is unchanged since this file
//!   system last saw it (size, mtime, ctime: close-to-open consistency, as NFS), else dropped
//!   at open. Writes are write-through either way (no writeback cache): every write lands in
//!   the real file before it returns, so the lazily unmounted directory holds all of them.
//! - entries and attributes of a path whose lookup or getattr the rule can match are never
//!   cached (TTL 0: every stat reaches the rule); others are cached for [`CACHE_TTL`]. A rename
//!   onto a matching path may leave the old entry cached for at most that long.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, InitFlags,
    KernelConfig, LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData,
    ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow,
    WriteFlags,
};
use havoc_spec::io::{FileKind, IoMethod};
use rustix::fs::{AtFlags, Mode, OFlags};

use super::rules::{Counters, Decision, Rule};

/// How long the kernel may cache entries and attributes when no rule can affect them.
const CACHE_TTL: Duration = Duration::from_secs(1);

struct Node {
    rel: String,
    nlookup: u64,
}

#[derive(Default)]
struct Inodes {
    nodes: HashMap<u64, Node>,
    by_key: HashMap<(u64, u64), u64>,
    next: u64,
}

enum Handle {
    File(Arc<OpenFile>),
    Dir(Vec<(u64, FileType, Vec<u8>)>),
}

/// A file opened through the mount.
struct OpenFile {
    fd: OwnedFd,
    /// The node it was opened as.
    ino: u64,
    /// Opened without `FOPEN_DIRECT_IO`: its data goes through the kernel's page cache.
    cached: bool,
    /// Written through this handle (the page cache then holds the new data).
    wrote: std::sync::atomic::AtomicBool,
    /// Opened in kernel passthrough: holds a reference on the node's backing file.
    passthrough: bool,
}

/// How a new handle is opened.
enum OpenMode {
    /// Direct I/O, or the FUSE page cache (`cached`), with these flags.
    Fuse(FopenFlags, bool),
    /// Kernel passthrough to the node's backing file (its id is in `PassFs::backings`).
    Passthrough,
}

/// What the kernel's page cache of a node was last known to reflect of the real file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    ino: u64,
    size: i64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Stamp {
    fn of(st: &rustix::fs::Stat) -> Self {
        Stamp {
            ino: st.st_ino,
            size: st.st_size,
            mtime: (st.st_mtime, st.st_mtime_nsec as i64),
            ctime: (st.st_ctime, st.st_ctime_nsec as i64),
        }
    }
}

/// State shared between the FUSE worker threads and the injection.
pub struct Shared {
    pub rule: Rule,
    pub counters: Counters,
    /// Handles open now (files and directories): at recovery, what the detached mount still serves.
    pub open_handles: AtomicU64,
}

pub struct PassFs {
    root: OwnedFd,
    shared: Arc<Shared>,
    inodes: Mutex<Inodes>,
    /// Node -> the real file as its page cache reflects it (cached files only).
    stamps: Mutex<HashMap<u64, Stamp>>,
    /// Whether the kernel accepted passthrough (set at init, cleared if registering fails).
    passthrough: std::sync::atomic::AtomicBool,
    /// Node -> its backing file for passthrough and how many handles use it: every handle of a
    /// node must use the same one while any is open.
    backings: Mutex<HashMap<u64, (fuser::BackingId, usize)>>,
    handles: RwLock<HashMap<u64, Handle>>,
    next_fh: AtomicU64,
    own_uid: u32,
}

fn errno(e: rustix::io::Errno) -> Errno {
    Errno::from_i32(e.raw_os_error())
}

fn kind_of(mode: u32) -> FileType {
    match mode & libc_s_ifmt() {
        0o040000 => FileType::Directory,
        0o120000 => FileType::Symlink,
        0o020000 => FileType::CharDevice,
        0o060000 => FileType::BlockDevice,
        0o010000 => FileType::NamedPipe,
        0o140000 => FileType::Socket,
        _ => FileType::RegularFile,
    }
}

fn libc_s_ifmt() -> u32 {
    0o170000
}

fn time(sec: i64, nsec: i64) -> SystemTime {
    if sec >= 0 {
        UNIX_EPOCH + Duration::new(sec as u64, nsec.clamp(0, 999_999_999) as u32)
    } else {
        UNIX_EPOCH - Duration::from_secs(sec.unsigned_abs())
    }
}

fn attr_of(st: &rustix::fs::Stat, ino: u64) -> FileAttr {
    FileAttr {
        ino: INodeNo(ino),
        size: st.st_size as u64,
        blocks: st.st_blocks as u64,
        atime: time(st.st_atime, st.st_atime_nsec as i64),
        mtime: time(st.st_mtime, st.st_mtime_nsec as i64),
        ctime: time(st.st_ctime, st.st_ctime_nsec as i64),
        crtime: UNIX_EPOCH,
        kind: kind_of(st.st_mode),
        perm: (st.st_mode & 0o7777) as u16,
        nlink: st.st_nlink as u32,
        uid: st.st_uid,
        gid: st.st_gid,
        rdev: st.st_rdev as u32,
        blksize: st.st_blksize as u32,
        flags: 0,
    }
}

fn join(parent: &str, name: &OsStr) -> String {
    let name = String::from_utf8_lossy(name.as_bytes());
    if parent.is_empty() {
        name.into_owned()
    } else {
        format!("{parent}/{name}")
    }
}

/// A path for `*at` calls relative to the original directory (`.` for the volume itself).
fn at(rel: &str) -> &str {
    if rel.is_empty() {
        "."
    } else {
        rel
    }
}

impl PassFs {
    pub fn new(root: OwnedFd, shared: Arc<Shared>) -> Self {
        let mut inodes = Inodes {
            next: 2,
            ..Default::default()
        };
        inodes.nodes.insert(
            1,
            Node {
                rel: String::new(),
                nlookup: 1,
            },
        );
        PassFs {
            root,
            shared,
            inodes: Mutex::new(inodes),
            stamps: Mutex::new(HashMap::new()),
            passthrough: Default::default(),
            backings: Mutex::new(HashMap::new()),
            handles: RwLock::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            own_uid: rustix::process::geteuid().as_raw(),
        }
    }

    fn rel(&self, ino: INodeNo) -> Option<String> {
        self.inodes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .nodes
            .get(&ino.0)
            .map(|n| n.rel.clone())
    }

    /// How long the kernel may keep the entry and attributes of `rel` replied after `d`.
    fn ttl(&self, rel: &str, d: Decision) -> Duration {
        if d == Decision::Pass && self.shared.rule.attrs_cacheable(rel) {
            CACHE_TTL
        } else {
            Duration::ZERO
        }
    }

    /// How to open node `ino` at `rel` (just opened as `fd`): passthrough where the rule can
    /// never match its data and the kernel allows it, registering `fd` as the node's backing
    /// file through `register` unless it has one; else as [`Self::open_mode`] says.
    fn open_how(
        &self,
        ino: u64,
        rel: &str,
        fd: &OwnedFd,
        register: impl FnOnce(&OwnedFd) -> std::io::Result<fuser::BackingId>,
    ) -> OpenMode {
        if self.passthrough.load(Ordering::Relaxed) && self.shared.rule.data_cacheable(rel) {
            let mut b = self.backings.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((_, n)) = b.get_mut(&ino) {
                *n += 1;
                return OpenMode::Passthrough;
            }
            match register(fd) {
                Ok(id) => {
                    b.insert(ino, (id, 1));
                    return OpenMode::Passthrough;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "IOChaos: no kernel passthrough, using the FUSE page cache");
                    self.passthrough.store(false, Ordering::Relaxed);
                }
            }
        }
        let (flags, cached) = self.open_mode(ino, rel, fd);
        OpenMode::Fuse(flags, cached)
    }

    /// Drops a passthrough handle's reference on its node's backing file.
    fn unref_backing(&self, ino: u64) {
        let mut b = self.backings.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, n)) = b.get_mut(&ino) {
            *n -= 1;
            if *n == 0 {
                b.remove(&ino);
            }
        }
    }

    /// The open flags for a new handle on node `ino` at `rel`, and whether it is cached:
    /// direct I/O where the rule can match its data, else the page cache, kept only if the
    /// real file is unchanged since that cache was filled.
    fn open_mode(&self, ino: u64, rel: &str, fd: &OwnedFd) -> (FopenFlags, bool) {
        if !self.shared.rule.data_cacheable(rel) {
            return (FopenFlags::FOPEN_DIRECT_IO, false);
        }
        let Ok(st) = rustix::fs::fstat(fd) else {
            return (FopenFlags::FOPEN_DIRECT_IO, false);
        };
        let now = Stamp::of(&st);
        let mut stamps = self.stamps.lock().unwrap_or_else(|e| e.into_inner());
        if stamps.get(&ino) == Some(&now) {
            (FopenFlags::FOPEN_KEEP_CACHE, true)
        } else {
            // Without KEEP_CACHE the kernel drops the node's cached pages at this open.
            stamps.insert(ino, now);
            (FopenFlags::empty(), true)
        }
    }

    fn decide(&self, m: IoMethod, rel: &str) -> Decision {
        let d = self.shared.rule.decide(m, rel, &self.shared.counters);
        if let Decision::Delay(by) = d {
            let t0 = Instant::now();
            std::thread::sleep(by);
            let c = &self.shared.counters;
            c.delayed.fetch_add(1, Ordering::Relaxed);
            c.delay_ns
                .fetch_add(t0.elapsed().as_nanos() as u64, Ordering::Relaxed);
        }
        d
    }

    fn stat(&self, rel: &str) -> Result<rustix::fs::Stat, Errno> {
        rustix::fs::statat(&self.root, at(rel), AtFlags::SYMLINK_NOFOLLOW).map_err(errno)
    }

    /// The node id for `rel` (creating it), counting one lookup.
    fn remember(&self, rel: &str, st: &rustix::fs::Stat) -> u64 {
        let mut inodes = self.inodes.lock().unwrap_or_else(|e| e.into_inner());
        let key = (st.st_dev, st.st_ino);
        if let Some(&id) = inodes.by_key.get(&key) {
            if let Some(n) = inodes.nodes.get_mut(&id) {
                n.nlookup += 1;
                n.rel = rel.to_string();
                return id;
            }
        }
        let id = inodes.next;
        inodes.next += 1;
        inodes.by_key.insert(key, id);
        inodes.nodes.insert(
            id,
            Node {
                rel: rel.to_string(),
                nlookup: 1,
            },
        );
        id
    }

    /// Applies `attr` overrides when the decision says so.
    fn finish_attr(&self, d: Decision, mut a: FileAttr) -> FileAttr {
        if d != Decision::Attr {
            return a;
        }
        let Some(o) = &self.shared.rule.attr else {
            return a;
        };
        if let Some(v) = o.ino {
            a.ino = INodeNo(v);
        }
        if let Some(v) = o.size {
            a.size = v;
        }
        if let Some(v) = o.blocks {
            a.blocks = v;
        }
        if let Some(t) = o.atime {
            a.atime = time(t.sec, t.nsec);
        }
        if let Some(t) = o.mtime {
            a.mtime = time(t.sec, t.nsec);
        }
        if let Some(t) = o.ctime {
            a.ctime = time(t.sec, t.nsec);
        }
        if let Some(k) = o.kind {
            a.kind = match k {
                FileKind::NamedPipe => FileType::NamedPipe,
                FileKind::CharDevice => FileType::CharDevice,
                FileKind::BlockDevice => FileType::BlockDevice,
                FileKind::Directory => FileType::Directory,
                FileKind::RegularFile => FileType::RegularFile,
                FileKind::Symlink => FileType::Symlink,
                FileKind::Socket => FileType::Socket,
            };
        }
        if let Some(p) = o.perm {
            a.perm = p.0;
        }
        if let Some(v) = o.nlink {
            a.nlink = v;
        }
        if let Some(v) = o.uid {
            a.uid = v;
        }
        if let Some(v) = o.gid {
            a.gid = v;
        }
        if let Some(v) = o.rdev {
            a.rdev = v;
        }
        self.shared
            .counters
            .attrs_overridden
            .fetch_add(1, Ordering::Relaxed);
        a
    }

    /// Replies to an operation that created or found `rel` with its entry.
    fn entry(&self, rel: &str, d: Decision, reply: ReplyEntry) {
        match self.stat(rel) {
            Ok(st) => {
                let id = self.remember(rel, &st);
                let attr = self.finish_attr(d, attr_of(&st, id));
                reply.entry(&self.ttl(rel, d), &attr, Generation(0));
            }
            Err(e) => reply.error(e),
        }
    }

    /// Gives a new file or directory to the caller (Havoc creates it as root).
    fn chown_to_caller(&self, req: &Request, rel: &str) {
        if req.uid() != self.own_uid {
            let _ = rustix::fs::chownat(
                &self.root,
                at(rel),
                Some(rustix::fs::Uid::from_raw(req.uid())),
                Some(rustix::fs::Gid::from_raw(req.gid())),
                AtFlags::SYMLINK_NOFOLLOW,
            );
        }
    }

    fn file(&self, fh: FileHandle) -> Option<Arc<OpenFile>> {
        match self
            .handles
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&fh.0)
        {
            Some(Handle::File(f)) => Some(f.clone()),
            _ => None,
        }
    }

    fn add_handle(&self, h: Handle) -> u64 {
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        self.handles
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(fh, h);
        self.shared.open_handles.fetch_add(1, Ordering::Relaxed);
        fh
    }

    fn drop_handle(&self, fh: FileHandle) {
        if self
            .handles
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&fh.0)
            .is_some()
        {
            self.shared.open_handles.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// At close (flush, then release, which the kernel sends without waiting): a cached
    /// handle's writes went through the page cache to the real file, so the cache reflects the
    /// file as it is now.
    fn restamp(&self, fh: FileHandle) {
        let Some(f) = self.file(fh) else { return };
        if f.cached && f.wrote.load(Ordering::Relaxed) {
            if let Ok(st) = rustix::fs::fstat(&f.fd) {
                self.stamps
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(f.ino, Stamp::of(&st));
            }
        }
    }

    fn open_flags(flags: i32) -> OFlags {
        let keep = OFlags::from_bits_retain(flags as u32)
            & !(OFlags::CREATE | OFlags::EXCL | OFlags::NOCTTY | OFlags::TRUNC);
        keep | OFlags::CLOEXEC | OFlags::NOFOLLOW
    }

    /// Renames nodes at or below `from` to `to`.
    fn renamed(&self, from: &str, to: &str) {
        let mut inodes = self.inodes.lock().unwrap_or_else(|e| e.into_inner());
        let prefix = format!("{from}/");
        for n in inodes.nodes.values_mut() {
            if n.rel == from {
                n.rel = to.to_string();
            } else if let Some(rest) = n.rel.strip_prefix(&prefix) {
                n.rel = format!("{to}/{rest}");
            }
        }
    }
}

macro_rules! rel_or {
    ($self:ident, $ino:expr, $reply:ident) => {
        match $self.rel($ino) {
            Some(r) => r,
            None => return $reply.error(Errno::ESTALE),
        }
    };
}

macro_rules! fail_if {
    ($d:expr, $reply:ident) => {
        if let Decision::Fail(e) = $d {
            return $reply.error(Errno::from_i32(e));
        }
    };
}

impl Filesystem for PassFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // Shared mmap of direct-I/O files (executables, databases) keeps working where the kernel
        // can do it (6.6+); elsewhere such mmaps fail with ENODEV, as under Chaos Mesh.
        let _ = config.add_capabilities(InitFlags::FUSE_DIRECT_IO_ALLOW_MMAP);
        let _ = config.add_capabilities(InitFlags::FUSE_PARALLEL_DIROPS);
        let _ = config.set_max_write(1 << 20);
        // Passthrough for files no rule can touch; depth 2: the real directory may itself be
        // on a stacked file system (a container's overlayfs).
        if config.add_capabilities(InitFlags::FUSE_PASSTHROUGH).is_ok()
            && config.set_max_stack_depth(2).is_ok()
        {
            self.passthrough.store(true, Ordering::Relaxed);
        }
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let p = rel_or!(self, parent, reply);
        let rel = join(&p, name);
        let d = self.decide(IoMethod::Lookup, &rel);
        fail_if!(d, reply);
        self.entry(&rel, d, reply);
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        if ino == INodeNo::ROOT {
            return;
        }
        let mut inodes = self.inodes.lock().unwrap_or_else(|e| e.into_inner());
        let gone = match inodes.nodes.get_mut(&ino.0) {
            Some(n) => {
                n.nlookup = n.nlookup.saturating_sub(nlookup);
                n.nlookup == 0
            }
            None => false,
        };
        if gone {
            inodes.nodes.remove(&ino.0);
            inodes.by_key.retain(|_, v| *v != ino.0);
            drop(inodes);
            // The kernel evicted the node, and its page cache with it.
            self.stamps
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&ino.0);
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        let rel = rel_or!(self, ino, reply);
        let d = self.decide(IoMethod::Getattr, &rel);
        fail_if!(d, reply);
        let st = match fh.and_then(|fh| self.file(fh)) {
            Some(f) => rustix::fs::fstat(&f.fd).map_err(errno),
            None => self.stat(&rel),
        };
        match st {
            Ok(st) => reply.attr(
                &self.ttl(&rel, d),
                &self.finish_attr(d, attr_of(&st, ino.0)),
            ),
            Err(e) => reply.error(e),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let rel = rel_or!(self, ino, reply);
        let d = self.decide(IoMethod::Setattr, &rel);
        fail_if!(d, reply);
        let r = (|| -> Result<(), Errno> {
            if let Some(m) = mode {
                rustix::fs::chmodat(
                    &self.root,
                    at(&rel),
                    Mode::from_raw_mode(m & 0o7777),
                    AtFlags::empty(),
                )
                .map_err(errno)?;
            }
            if uid.is_some() || gid.is_some() {
                rustix::fs::chownat(
                    &self.root,
                    at(&rel),
                    uid.map(rustix::fs::Uid::from_raw),
                    gid.map(rustix::fs::Gid::from_raw),
                    AtFlags::SYMLINK_NOFOLLOW,
                )
                .map_err(errno)?;
            }
            if let Some(len) = size {
                match fh.and_then(|fh| self.file(fh)) {
                    Some(f) => rustix::fs::ftruncate(&f.fd, len).map_err(errno)?,
                    None => {
                        let f = rustix::fs::openat(
                            &self.root,
                            at(&rel),
                            OFlags::WRONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
                            Mode::empty(),
                        )
                        .map_err(errno)?;
                        rustix::fs::ftruncate(&f, len).map_err(errno)?;
                    }
                }
            }
            if atime.is_some() || mtime.is_some() {
                let ts = |t: Option<TimeOrNow>| match t {
                    None => rustix::fs::Timespec {
                        tv_sec: 0,
                        tv_nsec: rustix::fs::UTIME_OMIT,
                    },
                    Some(TimeOrNow::Now) => rustix::fs::Timespec {
                        tv_sec: 0,
                        tv_nsec: rustix::fs::UTIME_NOW,
                    },
                    Some(TimeOrNow::SpecificTime(t)) => {
                        let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
                        rustix::fs::Timespec {
                            tv_sec: d.as_secs() as i64,
                            tv_nsec: d.subsec_nanos() as _,
                        }
                    }
                };
                let times = rustix::fs::Timestamps {
                    last_access: ts(atime),
                    last_modification: ts(mtime),
                };
                rustix::fs::utimensat(&self.root, at(&rel), &times, AtFlags::SYMLINK_NOFOLLOW)
                    .map_err(errno)?;
            }
            Ok(())
        })();
        if let Err(e) = r {
            return reply.error(e);
        }
        match self.stat(&rel) {
            Ok(st) => reply.attr(
                &self.ttl(&rel, d),
                &self.finish_attr(d, attr_of(&st, ino.0)),
            ),
            Err(e) => reply.error(e),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        let rel = rel_or!(self, ino, reply);
        let d = self.decide(IoMethod::Readlink, &rel);
        fail_if!(d, reply);
        match rustix::fs::readlinkat(&self.root, at(&rel), Vec::new()) {
            Ok(t) => reply.data(t.as_bytes()),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        let p = rel_or!(self, parent, reply);
        let rel = join(&p, name);
        let d = self.decide(IoMethod::Mknod, &rel);
        fail_if!(d, reply);
        let kind = rustix::fs::FileType::from_raw_mode(mode);
        if let Err(e) = rustix::fs::mknodat(
            &self.root,
            rel.as_str(),
            kind,
            Mode::from_raw_mode(mode & !umask & 0o7777),
            rdev as u64,
        ) {
            return reply.error(errno(e));
        }
        self.chown_to_caller(req, &rel);
        self.entry(&rel, d, reply);
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let p = rel_or!(self, parent, reply);
        let rel = join(&p, name);
        let d = self.decide(IoMethod::Mkdir, &rel);
        fail_if!(d, reply);
        if let Err(e) = rustix::fs::mkdirat(
            &self.root,
            rel.as_str(),
            Mode::from_raw_mode(mode & !umask & 0o7777),
        ) {
            return reply.error(errno(e));
        }
        self.chown_to_caller(req, &rel);
        self.entry(&rel, d, reply);
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let p = rel_or!(self, parent, reply);
        let rel = join(&p, name);
        let d = self.decide(IoMethod::Unlink, &rel);
        fail_if!(d, reply);
        match rustix::fs::unlinkat(&self.root, rel.as_str(), AtFlags::empty()) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let p = rel_or!(self, parent, reply);
        let rel = join(&p, name);
        let d = self.decide(IoMethod::Rmdir, &rel);
        fail_if!(d, reply);
        match rustix::fs::unlinkat(&self.root, rel.as_str(), AtFlags::REMOVEDIR) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let p = rel_or!(self, parent, reply);
        let rel = join(&p, link_name);
        let d = self.decide(IoMethod::Symlink, &rel);
        fail_if!(d, reply);
        if let Err(e) = rustix::fs::symlinkat(target, &self.root, rel.as_str()) {
            return reply.error(errno(e));
        }
        self.chown_to_caller(req, &rel);
        self.entry(&rel, d, reply);
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let p = rel_or!(self, parent, reply);
        let np = rel_or!(self, newparent, reply);
        let (from, to) = (join(&p, name), join(&np, newname));
        let d = self.decide(IoMethod::Rename, &from);
        fail_if!(d, reply);
        match rustix::fs::renameat_with(
            &self.root,
            from.as_str(),
            &self.root,
            to.as_str(),
            rustix::fs::RenameFlags::from_bits_retain(flags.bits()),
        ) {
            Ok(()) => {
                self.renamed(&from, &to);
                reply.ok()
            }
            Err(e) => reply.error(errno(e)),
        }
    }

    fn link(
        &self,
        _req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        let rel = rel_or!(self, ino, reply);
        let np = rel_or!(self, newparent, reply);
        let to = join(&np, newname);
        let d = self.decide(IoMethod::Link, &to);
        fail_if!(d, reply);
        if let Err(e) = rustix::fs::linkat(
            &self.root,
            at(&rel),
            &self.root,
            to.as_str(),
            AtFlags::empty(),
        ) {
            return reply.error(errno(e));
        }
        self.entry(&to, d, reply);
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let rel = rel_or!(self, ino, reply);
        let d = self.decide(IoMethod::Open, &rel);
        fail_if!(d, reply);
        match rustix::fs::openat(
            &self.root,
            at(&rel),
            Self::open_flags(flags.0),
            Mode::empty(),
        ) {
            Ok(fd) => {
                if flags.0 & libc_o_trunc() != 0 {
                    let _ = rustix::fs::ftruncate(&fd, 0);
                }
                let how = self.open_how(ino.0, &rel, &fd, |fd| reply.open_backing(fd));
                let (cached, passthrough) = match how {
                    OpenMode::Fuse(_, cached) => (cached, false),
                    OpenMode::Passthrough => (false, true),
                };
                let fh = FileHandle(self.add_handle(Handle::File(Arc::new(OpenFile {
                    fd,
                    ino: ino.0,
                    cached,
                    wrote: Default::default(),
                    passthrough,
                }))));
                match how {
                    OpenMode::Fuse(flags, _) => reply.opened(fh, flags),
                    OpenMode::Passthrough => {
                        let b = self.backings.lock().unwrap_or_else(|e| e.into_inner());
                        match b.get(&ino.0) {
                            Some((id, _)) => reply.opened_passthrough(fh, FopenFlags::empty(), id),
                            None => reply.error(Errno::EIO),
                        }
                    }
                }
            }
            Err(e) => reply.error(errno(e)),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let rel = rel_or!(self, ino, reply);
        let d = self.decide(IoMethod::Read, &rel);
        fail_if!(d, reply);
        let Some(f) = self.file(fh) else {
            return reply.error(Errno::EBADF);
        };
        let mut buf = vec![0u8; size as usize];
        let mut got = 0usize;
        while got < buf.len() {
            match rustix::io::pread(&f.fd, &mut buf[got..], offset + got as u64) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) if got == 0 => return reply.error(errno(e)),
                Err(_) => break,
            }
        }
        buf.truncate(got);
        if d == Decision::Mistake {
            self.shared.rule.alter(&mut buf, &self.shared.counters);
        }
        reply.data(&buf);
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let rel = rel_or!(self, ino, reply);
        let d = self.decide(IoMethod::Write, &rel);
        fail_if!(d, reply);
        let Some(f) = self.file(fh) else {
            return reply.error(Errno::EBADF);
        };
        let altered;
        let data = if d == Decision::Mistake {
            let mut v = data.to_vec();
            self.shared.rule.alter(&mut v, &self.shared.counters);
            altered = v;
            &altered[..]
        } else {
            data
        };
        f.wrote.store(true, Ordering::Relaxed);
        let mut done = 0usize;
        while done < data.len() {
            match rustix::io::pwrite(&f.fd, &data[done..], offset + done as u64) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) if done == 0 => return reply.error(errno(e)),
                Err(_) => break,
            }
        }
        reply.written(done as u32);
    }

    fn flush(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        self.restamp(fh);
        let rel = rel_or!(self, ino, reply);
        let d = self.decide(IoMethod::Flush, &rel);
        fail_if!(d, reply);
        reply.ok();
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        // Never failed: the handle must be freed whatever the rule says.
        self.restamp(fh);
        if let Some(f) = self.file(fh) {
            if f.passthrough {
                self.unref_backing(f.ino);
            }
        }
        self.drop_handle(fh);
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        let rel = rel_or!(self, ino, reply);
        let d = self.decide(IoMethod::Fsync, &rel);
        fail_if!(d, reply);
        let Some(f) = self.file(fh) else {
            return reply.error(Errno::EBADF);
        };
        let r = if datasync {
            rustix::fs::fdatasync(&f.fd)
        } else {
            rustix::fs::fsync(&f.fd)
        };
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let rel = rel_or!(self, ino, reply);
        let d = self.decide(IoMethod::Opendir, &rel);
        fail_if!(d, reply);
        let fd = match rustix::fs::openat(
            &self.root,
            at(&rel),
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(e) => return reply.error(errno(e)),
        };
        let mut entries = Vec::new();
        match rustix::fs::Dir::read_from(fd.as_fd()) {
            Ok(dir) => {
                for e in dir {
                    match e {
                        Ok(e) => {
                            let kind = match e.file_type() {
                                rustix::fs::FileType::Directory => FileType::Directory,
                                rustix::fs::FileType::Symlink => FileType::Symlink,
                                rustix::fs::FileType::CharacterDevice => FileType::CharDevice,
                                rustix::fs::FileType::BlockDevice => FileType::BlockDevice,
                                rustix::fs::FileType::Fifo => FileType::NamedPipe,
                                rustix::fs::FileType::Socket => FileType::Socket,
                                _ => FileType::RegularFile,
                            };
                            entries.push((e.ino(), kind, e.file_name().to_bytes().to_vec()));
                        }
                        Err(e) => return reply.error(errno(e)),
                    }
                }
            }
            Err(e) => return reply.error(errno(e)),
        }
        let fh = self.add_handle(Handle::Dir(entries));
        reply.opened(FileHandle(fh), FopenFlags::empty())
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let rel = rel_or!(self, ino, reply);
        let d = self.decide(IoMethod::Readdir, &rel);
        fail_if!(d, reply);
        let handles = self.handles.read().unwrap_or_else(|e| e.into_inner());
        let Some(Handle::Dir(entries)) = handles.get(&fh.0) else {
            return reply.error(Errno::EBADF);
        };
        for (i, (ino, kind, name)) in entries.iter().enumerate().skip(offset as usize) {
            if reply.add(
                INodeNo(*ino),
                (i + 1) as u64,
                *kind,
                OsStr::from_bytes(name),
            ) {
                break;
            }
        }
        reply.ok();
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.drop_handle(fh);
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let rel = rel_or!(self, ino, reply);
        let d = self.decide(IoMethod::Fsyncdir, &rel);
        fail_if!(d, reply);
        reply.ok();
    }

    fn statfs(&self, _req: &Request, ino: INodeNo, reply: ReplyStatfs) {
        let rel = rel_or!(self, ino, reply);
        let d = self.decide(IoMethod::Statfs, &rel);
        fail_if!(d, reply);
        match rustix::fs::fstatvfs(&self.root) {
            Ok(s) => reply.statfs(
                s.f_blocks,
                s.f_bfree,
                s.f_bavail,
                s.f_files,
                s.f_ffree,
                s.f_bsize as u32,
                s.f_namemax as u32,
                s.f_frsize as u32,
            ),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn access(&self, _req: &Request, ino: INodeNo, _mask: fuser::AccessFlags, reply: ReplyEmpty) {
        let rel = rel_or!(self, ino, reply);
        let d = self.decide(IoMethod::Access, &rel);
        fail_if!(d, reply);
        reply.ok();
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let p = rel_or!(self, parent, reply);
        let rel = join(&p, name);
        let d = self.decide(IoMethod::Create, &rel);
        fail_if!(d, reply);
        let oflags = OFlags::from_bits_retain(flags as u32) & !OFlags::NOCTTY
            | OFlags::CREATE
            | OFlags::CLOEXEC
            | OFlags::NOFOLLOW;
        let fd = match rustix::fs::openat(
            &self.root,
            rel.as_str(),
            oflags,
            Mode::from_raw_mode(mode & !umask & 0o7777),
        ) {
            Ok(fd) => fd,
            Err(e) => return reply.error(errno(e)),
        };
        self.chown_to_caller(req, &rel);
        let st = match rustix::fs::fstat(&fd) {
            Ok(st) => st,
            Err(e) => return reply.error(errno(e)),
        };
        let id = self.remember(&rel, &st);
        let attr = self.finish_attr(d, attr_of(&st, id));
        let how = self.open_how(id, &rel, &fd, |fd| reply.open_backing(fd));
        let (cached, passthrough) = match how {
            OpenMode::Fuse(_, cached) => (cached, false),
            OpenMode::Passthrough => (false, true),
        };
        let fh = FileHandle(self.add_handle(Handle::File(Arc::new(OpenFile {
            fd,
            ino: id,
            cached,
            wrote: Default::default(),
            passthrough,
        }))));
        let ttl = self.ttl(&rel, d);
        match how {
            OpenMode::Fuse(flags, _) => reply.created(&ttl, &attr, Generation(0), fh, flags),
            OpenMode::Passthrough => {
                let b = self.backings.lock().unwrap_or_else(|e| e.into_inner());
                match b.get(&id) {
                    Some((bid, _)) => reply.created_passthrough(
                        &ttl,
                        &attr,
                        Generation(0),
                        fh,
                        FopenFlags::empty(),
                        bid,
                    ),
                    None => reply.error(Errno::EIO),
                }
            }
        }
    }

    fn fallocate(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        let rel = rel_or!(self, ino, reply);
        let d = self.decide(IoMethod::Fallocate, &rel);
        fail_if!(d, reply);
        let Some(f) = self.file(fh) else {
            return reply.error(Errno::EBADF);
        };
        match rustix::fs::fallocate(
            &f.fd,
            rustix::fs::FallocateFlags::from_bits_retain(mode as u32),
            offset,
            length,
        ) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(e)),
        }
    }
}

fn libc_o_trunc() -> i32 {
    0o1000
}

//! Tree blobs: one directory's entries, sorted by name.
//!
//! Layout: `"SRTR" | version u8 | count u32 | nodes`, each node:
//! `name lp | kind u8 | mode u32 | uid u32 | gid u32 | mtime i64 | mtime_nsec u32 |
//! ctime i64 | ctime_nsec u32 | inode u64 | device u64 | links u64 | size u64 | tail`
//! where the tail is, by kind: file `count u32 | blob id (32)*`;
//! directory: subtree blob id (32); symlink: target lp; char/block device:
//! rdev u64; fifo and socket: nothing.
//!
//! Version 2 appends to each node, after its tail, its extended
//! attributes: `recorded u8` (0: not recorded, 1: recorded), and when
//! recorded `count u32 | (name lp | value lp)*`, sorted by name. Names are
//! 1 to [`XATTR_NAME_MAX`] bytes without NUL; values at most
//! [`XATTR_VALUE_MAX`] bytes (Linux's limits); per node, names with a NUL
//! each at most [`XATTR_NAMES_MAX`] bytes and names and values together
//! at most [`XATTR_NODE_MAX`]. Version 1 trees (no
//! extended attributes) still decode, with none recorded.
//!
//! **Invariant:** a decoded tree's names are non-empty, contain no `/` or
//! NUL, are not `.` or `..`, and are strictly ascending: restore can join
//! them to a target directory without escaping it.

use super::wire::{Reader, Writer};
use super::{expect_version, Error};
use crate::id::BlobId;

const MAGIC: &[u8; 4] = b"SRTR";
/// The version written.
pub const VERSION: u8 = 2;
/// The version before extended attributes, still read.
const VERSION_1: u8 = 1;
const WHAT: &str = "tree";
/// Smallest encoded node (empty tail aside from the fixed fields).
const MIN_NODE: usize = 4 + 1 + 12 + 12 + 12 + 32;
/// Longest extended attribute name (Linux's `XATTR_NAME_MAX`).
pub const XATTR_NAME_MAX: usize = 255;
/// Largest extended attribute value (Linux's `XATTR_SIZE_MAX`).
pub const XATTR_VALUE_MAX: usize = 64 * 1024;
/// Largest name list of one node: each name and a NUL byte, as Linux's
/// `listxattr` returns it (`XATTR_LIST_MAX`).
pub const XATTR_NAMES_MAX: usize = 64 * 1024;
/// Largest total of one node's extended attributes: every name and value.
pub const XATTR_NODE_MAX: usize = 1024 * 1024;
/// Smallest encoded extended attribute: two lengths and a 1-byte name.
const MIN_XATTR: usize = 4 + 1 + 4;
/// Attributes reserved for before the first is read: a count claims
/// nothing about memory until its attributes are there.
const XATTR_RESERVE: usize = 16;

/// Kind of a directory entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeKind {
    /// Regular file with its content chunks.
    File {
        /// Chunk ids in order.
        content: Vec<BlobId>,
    },
    /// Directory with its subtree.
    Dir {
        /// The subtree blob.
        subtree: BlobId,
    },
    /// Symbolic link.
    Symlink {
        /// Raw target bytes.
        target: Vec<u8>,
    },
    /// Character device.
    CharDevice {
        /// Device number.
        rdev: u64,
    },
    /// Block device.
    BlockDevice {
        /// Device number.
        rdev: u64,
    },
    /// Named pipe.
    Fifo,
    /// Unix socket (restored as nothing; recorded for completeness).
    Socket,
}

/// One extended attribute: its full name (with its namespace, such as
/// `user.` or `system.posix_acl_access`) and its raw value.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Xattr {
    /// Name bytes, namespace included.
    pub name: Vec<u8>,
    /// Value bytes, as the filesystem returned them.
    pub value: Vec<u8>,
}

/// One directory entry with its metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// File name (raw bytes of the OS name).
    pub name: Vec<u8>,
    /// Kind and kind-specific data.
    pub kind: NodeKind,
    /// Permission bits and file-type bits (st_mode).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Modification time, seconds.
    pub mtime: i64,
    /// Modification time, nanoseconds.
    pub mtime_nsec: u32,
    /// Change time, seconds.
    pub ctime: i64,
    /// Change time, nanoseconds.
    pub ctime_nsec: u32,
    /// Inode number at backup time.
    pub inode: u64,
    /// Device at backup time.
    pub device: u64,
    /// Hard-link count at backup time.
    pub links: u64,
    /// Size in bytes (files).
    pub size: u64,
    /// Extended attributes sorted by name, or `None` when the backup did
    /// not record them (version 1 trees, `--no-xattrs`): "none recorded"
    /// is not "none there".
    pub xattrs: Option<Vec<Xattr>>,
}

/// A directory: its nodes sorted by name.
pub type Tree = Vec<Node>;

fn check_name(name: &[u8]) -> Result<(), Error> {
    if name.is_empty() || name == b"." || name == b".." || name.contains(&b'/') || name.contains(&0) {
        return Err(Error::Invalid {
            what: WHAT,
            why: format!("unsafe entry name {:?}", String::from_utf8_lossy(name)),
        });
    }
    Ok(())
}

/// Encodes a tree. Callers sort nodes by name first (`tree::sort`).
pub fn encode(nodes: &[Node]) -> Vec<u8> {
    let mut w = Writer::with_capacity(9 + nodes.len() * 128);
    w.bytes(MAGIC).u8(VERSION).u32(nodes.len() as u32);
    // Node fields are written in the layout's order (see the module docs).
    for n in nodes {
        w.lp(&n.name);
        let kind = match &n.kind {
            NodeKind::File { .. } => 0,
            NodeKind::Dir { .. } => 1,
            NodeKind::Symlink { .. } => 2,
            NodeKind::CharDevice { .. } => 3,
            NodeKind::BlockDevice { .. } => 4,
            NodeKind::Fifo => 5,
            NodeKind::Socket => 6,
        };
        w.u8(kind).u32(n.mode).u32(n.uid).u32(n.gid);
        w.i64(n.mtime).u32(n.mtime_nsec).i64(n.ctime).u32(n.ctime_nsec);
        w.u64(n.inode).u64(n.device).u64(n.links).u64(n.size);
        match &n.kind {
            NodeKind::File { content } => {
                w.u32(content.len() as u32);
                for id in content {
                    w.bytes(&id.0);
                }
            }
            NodeKind::Dir { subtree } => {
                w.bytes(&subtree.0);
            }
            NodeKind::Symlink { target } => {
                w.lp(target);
            }
            NodeKind::CharDevice { rdev } | NodeKind::BlockDevice { rdev } => {
                w.u64(*rdev);
            }
            NodeKind::Fifo | NodeKind::Socket => {}
        }
        encode_xattrs(&mut w, n.xattrs.as_deref());
    }
    w.finish()
}

fn encode_xattrs(w: &mut Writer, xattrs: Option<&[Xattr]>) {
    let Some(xattrs) = xattrs else {
        w.u8(0);
        return;
    };
    w.u8(1).u32(xattrs.len() as u32);
    for x in xattrs {
        w.lp(&x.name).lp(&x.value);
    }
}

/// Decodes and validates a tree (version 1 or 2).
pub fn decode(bytes: &[u8]) -> Result<Tree, Error> {
    let mut r = Reader::new(bytes, WHAT);
    let v = r.magic(MAGIC)?;
    if v != VERSION_1 {
        expect_version(WHAT, v, VERSION)?;
    }
    let n = r.count(MIN_NODE)?;
    let mut out: Vec<Node> = Vec::with_capacity(n);
    for _ in 0..n {
        let node = decode_node(&mut r, v)?;
        if let Some(prev) = out.last() {
            if prev.name >= node.name {
                return Err(Error::Invalid { what: WHAT, why: "entries not strictly sorted by name".into() });
            }
        }
        out.push(node);
    }
    r.end()?;
    Ok(out)
}

/// One node of a tree of version `v`.
fn decode_node(r: &mut Reader<'_>, v: u8) -> Result<Node, Error> {
    let name = r.lp()?.to_vec();
    check_name(&name)?;
    let kind_byte = r.u8()?;
    let mode = r.u32()?;
    let uid = r.u32()?;
    let gid = r.u32()?;
    let mtime = r.i64()?;
    let mtime_nsec = r.u32()?;
    let ctime = r.i64()?;
    let ctime_nsec = r.u32()?;
    if mtime_nsec >= 1_000_000_000 || ctime_nsec >= 1_000_000_000 {
        return Err(Error::Invalid { what: WHAT, why: "nanoseconds out of range".into() });
    }
    let inode = r.u64()?;
    let device = r.u64()?;
    let links = r.u64()?;
    let size = r.u64()?;
    let kind = decode_kind(r, kind_byte)?;
    let xattrs = if v == VERSION_1 { None } else { decode_xattrs(r)? };
    Ok(Node { name, kind, mode, uid, gid, mtime, mtime_nsec, ctime, ctime_nsec, inode, device, links, size, xattrs })
}

/// The kind-specific tail of a node of kind `kind_byte`.
fn decode_kind(r: &mut Reader<'_>, kind_byte: u8) -> Result<NodeKind, Error> {
    Ok(match kind_byte {
        0 => {
            let m = r.count(32)?;
            let mut content = Vec::with_capacity(m);
            for _ in 0..m {
                content.push(BlobId(r.array()?));
            }
            NodeKind::File { content }
        }
        1 => NodeKind::Dir { subtree: BlobId(r.array()?) },
        2 => NodeKind::Symlink { target: r.lp()?.to_vec() },
        3 => NodeKind::CharDevice { rdev: r.u64()? },
        4 => NodeKind::BlockDevice { rdev: r.u64()? },
        5 => NodeKind::Fifo,
        6 => NodeKind::Socket,
        k => return Err(Error::Invalid { what: WHAT, why: format!("unknown node kind {k}") }),
    })
}

/// A version 2 node's extended attributes: bounded, named safely and
/// strictly sorted by name.
fn decode_xattrs(r: &mut Reader<'_>) -> Result<Option<Vec<Xattr>>, Error> {
    let invalid = |why: String| Error::Invalid { what: WHAT, why };
    match r.u8()? {
        0 => return Ok(None),
        1 => {}
        b => return Err(invalid(format!("extended attributes flag {b}"))),
    }
    let n = r.count(MIN_XATTR)?;
    let mut out: Vec<Xattr> = Vec::with_capacity(n.min(XATTR_RESERVE));
    let (mut names, mut total) = (0usize, 0usize);
    for _ in 0..n {
        let name = r.lp()?;
        if name.is_empty() || name.len() > XATTR_NAME_MAX || name.contains(&0) {
            return Err(invalid(format!("bad extended attribute name of {} bytes", name.len())));
        }
        let value = r.lp()?;
        if value.len() > XATTR_VALUE_MAX {
            return Err(invalid(format!("extended attribute value of {} bytes", value.len())));
        }
        names += name.len() + 1;
        total += name.len() + value.len();
        if names > XATTR_NAMES_MAX || total > XATTR_NODE_MAX {
            return Err(invalid(format!(
                "extended attributes over {XATTR_NAMES_MAX} bytes of names or {XATTR_NODE_MAX} bytes in all"
            )));
        }
        if out.last().is_some_and(|prev| prev.name.as_slice() >= name) {
            return Err(invalid("extended attributes not strictly sorted by name".into()));
        }
        out.push(Xattr { name: name.to_vec(), value: value.to_vec() });
    }
    Ok(Some(out))
}

//! The directory-manifest model: building nodes from file metadata,
//! ordering, and path handling inside a snapshot.
//!
//! Owns: turning `std::fs::Metadata` into a [`Node`], sorting, splitting
//! snapshot paths. Must not: read the filesystem beyond the metadata it is
//! given, or load trees (that is `repo`).

use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;

pub use crate::codec::tree::{Node, NodeKind, Tree, Xattr};

/// Builds a node from metadata; the caller fills the kind's data.
pub fn node_from_metadata(name: &std::ffi::OsStr, md: &std::fs::Metadata, kind: NodeKind) -> Node {
    Node {
        name: name.as_bytes().to_vec(),
        kind,
        mode: md.mode(),
        uid: md.uid(),
        gid: md.gid(),
        mtime: md.mtime(),
        mtime_nsec: md.mtime_nsec().clamp(0, 999_999_999) as u32,
        ctime: md.ctime(),
        ctime_nsec: md.ctime_nsec().clamp(0, 999_999_999) as u32,
        inode: md.ino(),
        device: md.dev(),
        links: md.nlink(),
        size: if md.is_file() { md.size() } else { 0 },
        xattrs: None,
    }
}

/// Sorts nodes by name, as the tree format requires, and drops duplicates
/// of a name (keeping the first).
pub fn sort(nodes: &mut Vec<Node>) {
    nodes.sort_by(|a, b| a.name.cmp(&b.name));
    nodes.dedup_by(|a, b| a.name == b.name);
}

/// Splits a snapshot path (`/srv/app/x`, `srv/app/x` or `/`) into its
/// components; `.` and empty components are dropped.
pub fn components(path: &str) -> Vec<&str> {
    path.split('/').filter(|c| !c.is_empty() && *c != ".").collect()
}

/// Finds a node by name in a sorted tree.
pub fn find<'a>(tree: &'a Tree, name: &[u8]) -> Option<&'a Node> {
    tree.binary_search_by(|n| n.name.as_slice().cmp(name)).ok().map(|i| &tree[i])
}

/// True when a file node can be taken over from the parent snapshot without
/// reading: same size, mtime, ctime and inode.
pub fn unchanged(old: &Node, new: &Node) -> bool {
    matches!(old.kind, NodeKind::File { .. })
        && old.size == new.size
        && old.mtime == new.mtime
        && old.mtime_nsec == new.mtime_nsec
        && old.ctime == new.ctime
        && old.ctime_nsec == new.ctime_nsec
        && old.inode == new.inode
}

/// Whether two nodes agree in everything but their kind (a file's content,
/// a directory's subtree): name and every recorded attribute.
pub fn same_metadata(a: &Node, b: &Node) -> bool {
    // Destructured, so that a field added to `Node` must be decided here.
    let Node {
        name,
        kind: _,
        mode,
        uid,
        gid,
        mtime,
        mtime_nsec,
        ctime,
        ctime_nsec,
        inode,
        device,
        links,
        size,
        xattrs,
    } = a;
    *name == b.name
        && *mode == b.mode
        && *uid == b.uid
        && *gid == b.gid
        && *mtime == b.mtime
        && *mtime_nsec == b.mtime_nsec
        && *ctime == b.ctime
        && *ctime_nsec == b.ctime_nsec
        && *inode == b.inode
        && *device == b.device
        && *links == b.links
        && *size == b.size
        && *xattrs == b.xattrs
}

/// A short type letter for listings (as `ls -l`).
pub fn type_char(n: &Node) -> char {
    match n.kind {
        NodeKind::File { .. } => '-',
        NodeKind::Dir { .. } => 'd',
        NodeKind::Symlink { .. } => 'l',
        NodeKind::CharDevice { .. } => 'c',
        NodeKind::BlockDevice { .. } => 'b',
        NodeKind::Fifo => 'p',
        NodeKind::Socket => 's',
    }
}

/// The kind's name in listings and JSON (`file`, `dir`, `symlink`,
/// `chardev`, `blockdev`, `fifo`, `socket`).
pub fn kind_name(n: &Node) -> &'static str {
    match n.kind {
        NodeKind::File { .. } => "file",
        NodeKind::Dir { .. } => "dir",
        NodeKind::Symlink { .. } => "symlink",
        NodeKind::CharDevice { .. } => "chardev",
        NodeKind::BlockDevice { .. } => "blockdev",
        NodeKind::Fifo => "fifo",
        NodeKind::Socket => "socket",
    }
}

/// `rwxr-xr-x`-style permission text.
pub fn mode_string(n: &Node) -> String {
    let mut s = String::with_capacity(10);
    s.push(type_char(n));
    let m = n.mode;
    for shift in [6, 3, 0] {
        s.push(if m >> shift & 4 != 0 { 'r' } else { '-' });
        s.push(if m >> shift & 2 != 0 { 'w' } else { '-' });
        s.push(if m >> shift & 1 != 0 { 'x' } else { '-' });
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::tree::{decode, encode};
    use crate::id::BlobId;
    use proptest::prelude::*;

    fn arb_node() -> impl Strategy<Value = Node> {
        let kind = prop_oneof![
            proptest::collection::vec(any::<[u8; 32]>(), 0..4)
                .prop_map(|v| NodeKind::File { content: v.into_iter().map(BlobId).collect() }),
            any::<[u8; 32]>().prop_map(|b| NodeKind::Dir { subtree: BlobId(b) }),
            proptest::collection::vec(any::<u8>(), 0..40).prop_map(|t| NodeKind::Symlink { target: t }),
            any::<u64>().prop_map(|rdev| NodeKind::CharDevice { rdev }),
            any::<u64>().prop_map(|rdev| NodeKind::BlockDevice { rdev }),
            Just(NodeKind::Fifo),
            Just(NodeKind::Socket),
        ];
        let xattr = ("[a-z]{1,8}\\.[a-zA-Z0-9_.]{0,20}", proptest::collection::vec(any::<u8>(), 0..40))
            .prop_map(|(name, value)| Xattr { name: name.into_bytes(), value });
        // Sorted and unique by name, as the backup records them.
        let xattrs = proptest::option::of(proptest::collection::vec(xattr, 0..4).prop_map(|mut v| {
            v.sort();
            v.dedup_by(|a, b| a.name == b.name);
            v
        }));
        (
            "[a-zA-Z0-9 ._é漢-]{1,20}".prop_filter("not dot names", |s| s != "." && s != ".."),
            kind,
            any::<(u32, u32, u32, i64, i64, u64, u64, u64, u64)>(),
            0u32..1_000_000_000,
            xattrs,
        )
            .prop_map(
                |(name, kind, (mode, uid, gid, mtime, ctime, inode, device, links, size), ns, xattrs)| Node {
                    name: name.into_bytes(),
                    kind,
                    mode,
                    uid,
                    gid,
                    mtime,
                    mtime_nsec: ns,
                    ctime,
                    ctime_nsec: ns,
                    inode,
                    device,
                    links,
                    size,
                    xattrs,
                },
            )
    }

    proptest! {
        #[test]
        fn tree_codec_roundtrip(mut nodes in proptest::collection::vec(arb_node(), 0..12)) {
            sort(&mut nodes);
            let bytes = encode(&nodes);
            let back = decode(&bytes).unwrap();
            prop_assert_eq!(&back, &nodes);
            prop_assert_eq!(encode(&back), bytes.clone());
            for n in 0..bytes.len() {
                prop_assert!(decode(&bytes[..n]).is_err());
            }
        }
    }

    #[test]
    fn rejects_unsafe_names_and_disorder() {
        let mut n = Node {
            name: b"../x".to_vec(),
            kind: NodeKind::Fifo,
            mode: 0,
            uid: 0,
            gid: 0,
            mtime: 0,
            mtime_nsec: 0,
            ctime: 0,
            ctime_nsec: 0,
            inode: 0,
            device: 0,
            links: 1,
            size: 0,
            xattrs: None,
        };
        assert!(decode(&encode(&[n.clone()])).is_err());
        n.name = b"..".to_vec();
        assert!(decode(&encode(&[n.clone()])).is_err());
        n.name = b"b".to_vec();
        let mut m = n.clone();
        m.name = b"a".to_vec();
        assert!(decode(&encode(&[n, m])).is_err());
        assert_eq!(components("/srv//app/./x"), vec!["srv", "app", "x"]);
    }

    /// A node named `f` with the extended attributes `xattrs`.
    fn node_with(xattrs: Option<Vec<Xattr>>) -> Node {
        let mut n = node_from_metadata(std::ffi::OsStr::new("f"), &std::fs::metadata("/").unwrap(), NodeKind::Fifo);
        n.xattrs = xattrs;
        n
    }

    fn xattr(name: &[u8], value: &[u8]) -> Xattr {
        Xattr { name: name.to_vec(), value: value.to_vec() }
    }

    #[test]
    fn extended_attributes_round_trip_and_bad_ones_are_refused() {
        let good = node_with(Some(vec![xattr(b"system.posix_acl_access", b"\x02\0\0\0"), xattr(b"user.a", b"")]));
        assert_eq!(decode(&encode(std::slice::from_ref(&good))), Ok(vec![good]));
        for bad in [
            vec![xattr(b"user.b", b"1"), xattr(b"user.a", b"2")],
            vec![xattr(b"user.a", b"1"), xattr(b"user.a", b"2")],
            vec![xattr(b"", b"1")],
            vec![xattr(b"user.\0", b"1")],
            vec![xattr(&[b'u'; 256], b"1")],
            vec![xattr(b"user.big", &vec![0; 64 * 1024 + 1])],
        ] {
            let bytes = encode(&[node_with(Some(bad.clone()))]);
            assert!(decode(&bytes).is_err(), "{bad:?} decoded");
        }
        // A flag other than 0 and 1.
        let mut bytes = encode(&[node_with(None)]);
        *bytes.last_mut().unwrap() = 2;
        assert!(decode(&bytes).is_err());
    }

    #[test]
    fn a_node_s_extended_attributes_are_bounded_in_all() {
        use crate::codec::tree::{XATTR_NAMES_MAX, XATTR_NODE_MAX, XATTR_VALUE_MAX};
        let named = |i: usize, len: usize| format!("user.{i:0len$}", len = len - 5).into_bytes();
        // Values of the largest size, up to the total and one past it.
        let full = XATTR_NODE_MAX / (XATTR_VALUE_MAX + 16);
        let big = |n: usize| (0..n).map(|i| xattr(&named(i, 16), &vec![7; XATTR_VALUE_MAX])).collect::<Vec<_>>();
        let ok = node_with(Some(big(full)));
        assert_eq!(decode(&encode(std::slice::from_ref(&ok))), Ok(vec![ok]));
        let err = decode(&encode(&[node_with(Some(big(full + 1)))])).unwrap_err();
        assert!(err.to_string().contains("in all"), "{err}");
        // Names alone: the list with a NUL after each, up to and past 64 KiB.
        let fit = XATTR_NAMES_MAX / 256;
        let names = |n: usize| (0..n).map(|i| xattr(&named(i, 255), b"")).collect::<Vec<_>>();
        let ok = node_with(Some(names(fit)));
        assert_eq!(decode(&encode(std::slice::from_ref(&ok))), Ok(vec![ok]));
        assert!(decode(&encode(&[node_with(Some(names(fit + 1)))])).is_err());
    }

    #[test]
    fn a_version_1_tree_decodes_with_no_extended_attributes_recorded() {
        let n = node_with(Some(Vec::new()));
        let mut v1 = encode(std::slice::from_ref(&n));
        // Version 1: the same layout without the attributes (one flag
        // byte and an empty count).
        v1[4] = 1;
        v1.truncate(v1.len() - 5);
        assert_eq!(decode(&v1), Ok(vec![Node { xattrs: None, ..n }]));
        v1[4] = 3;
        assert!(decode(&v1).is_err());
    }
}

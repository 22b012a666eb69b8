use super::*;
use std::io::Write;

struct TempDir(camino::Utf8PathBuf);
impl TempDir {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("sarge-unpack-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(camino::Utf8PathBuf::from_path_buf(dir).unwrap())
    }
}
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A tar stream built entry by entry, with raw names so that hostile
/// paths the `tar` builder would refuse can be written too.
fn tarball(entries: &[(&str, EntryType, &[u8], &str)]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (name, entry_type, data, link) in entries {
        let mut header = tar::Header::new_gnu();
        header.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        header.set_entry_type(*entry_type);
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        if !link.is_empty() {
            header.as_old_mut().linkname[..link.len()].copy_from_slice(link.as_bytes());
        }
        header.set_cksum();
        builder.append(&header, *data).unwrap();
    }
    builder.into_inner().unwrap()
}

fn limits(max_unpacked_bytes: u64, free_bytes: u64) -> Limits {
    Limits {
        max_unpacked_bytes,
        config: "/h/etc/sarge.yaml".into(),
        free_bytes,
        free_inodes: 1000,
        free_on: "/h/var/instances".into(),
    }
}

fn unpack(name: &str, bytes: &[u8]) -> (TempDir, Result<usize>) {
    unpack_with(name, bytes, &limits(1 << 30, 1 << 40))
}

fn unpack_with(name: &str, bytes: &[u8], limits: &Limits) -> (TempDir, Result<usize>) {
    let dir = TempDir::new(name);
    let result = unpack_tarball(bytes, &dir.0, limits);
    (dir, result)
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(bytes).unwrap();
    gz.finish().unwrap()
}

#[test]
fn unpacks_plain_and_gzip_tarballs() {
    let bytes = tarball(&[
        ("./", EntryType::Directory, b"", ""),
        ("Procfile", EntryType::Regular, b"web: x\n", ""),
        ("src/app.py", EntryType::Regular, b"print(1)\n", ""),
        ("app.py", EntryType::Symlink, b"", "src/app.py"),
    ]);
    let (dir, result) = unpack("plain", &bytes);
    assert_eq!(result.unwrap(), 4);
    assert_eq!(
        std::fs::read_to_string(dir.0.join("app.py")).unwrap(),
        "print(1)\n"
    );

    let (dir, result) = unpack("gzip", &gzip(&bytes));
    assert_eq!(result.unwrap(), 4);
    assert_eq!(
        std::fs::read_to_string(dir.0.join("Procfile")).unwrap(),
        "web: x\n"
    );
}

fn refused(name: &str, bytes: &[u8]) -> String {
    let (_dir, result) = unpack(name, bytes);
    result.unwrap_err().to_string()
}

#[test]
fn refuses_entries_that_escape() {
    assert_eq!(
        refused(
            "dotdot",
            &tarball(&[("a/../../evil", EntryType::Regular, b"x", "")])
        ),
        "tarball entry a/../../evil climbs out of the app folder with `..`"
    );
    assert_eq!(
        refused(
            "abs",
            &tarball(&[("/tmp/evil", EntryType::Regular, b"x", "")])
        ),
        "tarball entry /tmp/evil has an absolute path"
    );
    assert_eq!(
        refused(
            "symlink",
            &tarball(&[("up", EntryType::Symlink, b"", "../..")])
        ),
        "tarball entry up is a link to ../.. outside the app folder"
    );
    assert_eq!(
        refused(
            "abslink",
            &tarball(&[("etc", EntryType::Symlink, b"", "/etc")])
        ),
        "tarball entry etc is a link to /etc outside the app folder"
    );
    assert_eq!(
        refused(
            "hardlink",
            &tarball(&[("passwd", EntryType::Link, b"", "../../etc/passwd")])
        ),
        "tarball entry passwd is a hard link to ../../etc/passwd outside the app folder"
    );
    assert_eq!(
        refused(
            "through",
            &tarball(&[
                ("sub", EntryType::Directory, b"", ""),
                ("here", EntryType::Symlink, b"", "sub"),
                ("here/file", EntryType::Regular, b"x", ""),
            ])
        ),
        "tarball entry here/file would be written through the link here"
    );
    assert_eq!(
        refused("fifo", &tarball(&[("pipe", EntryType::Fifo, b"", "")])),
        "tarball entry pipe is a fifo"
    );
    assert_eq!(
        refused("dev", &tarball(&[("sda", EntryType::Block, b"", "")])),
        "tarball entry sda is a device file"
    );
}

#[test]
fn refuses_what_is_not_a_tarball() {
    assert_eq!(
        refused(
            "garbage",
            b"this is not a tarball at all, just some words........"
        ),
        "cannot unpack the tarball: it is not a tar or gzip archive (no valid tar header)"
    );
    assert_eq!(
        refused("empty", b""),
        "cannot unpack the tarball: it is empty"
    );
    let bytes = tarball(&[
        ("a", EntryType::Regular, &[b'a'; 2000], ""),
        ("b", EntryType::Regular, &[b'b'; 2000], ""),
    ]);
    assert_eq!(
        refused("truncated", &bytes[..2600]),
        "cannot unpack the tarball: it is truncated: it ends inside a header after 1 entries"
    );
    assert_eq!(
        refused("truncated-data", &bytes[..3200]),
        "cannot unpack the tarball: it is truncated: it ends inside entry b"
    );
}

/// The tarball `tar::Builder` writes ends with exactly two zero blocks.
fn app_tarball() -> Vec<u8> {
    tarball(&[
        ("Procfile", EntryType::Regular, b"web: x\n", ""),
        ("big", EntryType::Regular, &[b'x'; 20_000], ""),
    ])
}

#[test]
fn a_tarball_without_its_end_marker_is_truncated() {
    let bytes = app_tarball();
    let end = bytes.len() - 1024;
    assert_eq!(
        refused("no-marker", &bytes[..end]),
        "cannot unpack the tarball: it is truncated: it ends after 2 entries without the end-of-archive marker"
    );
    assert_eq!(
        refused("half-marker", &bytes[..end + 512]),
        "cannot unpack the tarball: it is truncated: it ends after 2 entries with half of the end-of-archive marker"
    );
    assert_eq!(
        refused("gzip-no-marker", &gzip(&bytes[..end])),
        "cannot unpack the tarball: it is truncated: it ends after 2 entries without the end-of-archive marker"
    );
    // Records of 10 KiB, as GNU tar writes: the first cut at a record
    // boundary that is also an entry boundary.
    let (_dir, result) = unpack("whole", &bytes);
    assert_eq!(result.unwrap(), 2);
}

#[test]
fn a_gzip_stream_must_end_with_its_trailer() {
    let gz = gzip(&app_tarball());
    let truncated =
        "cannot unpack the tarball: it is truncated: its gzip stream ends before its trailer";
    assert_eq!(refused("no-trailer", &gz[..gz.len() - 8]), truncated);
    assert_eq!(refused("short-trailer", &gz[..gz.len() - 3]), truncated);
    let message = refused("cut", &gz[..gz.len() / 2]);
    assert!(
        message.starts_with("cannot unpack the tarball: it is truncated: it ends inside"),
        "{message}"
    );
    for at in [8, 4] {
        let mut bad = gz.clone();
        let len = bad.len();
        bad[len - at] ^= 1;
        assert_eq!(
            refused("bad-trailer", &bad),
            "cannot unpack the tarball: it is corrupt after 2 entries: corrupt gzip stream does not have a matching checksum"
        );
    }
    assert_eq!(
        refused("garbage", &[gz.as_slice(), b"junk"].concat()),
        "cannot unpack the tarball: it has 4 bytes of garbage after its gzip stream"
    );
    let (_dir, result) = unpack("padded", &[gz.as_slice(), &[0; 10240]].concat());
    assert_eq!(result.unwrap(), 2);
}

#[test]
fn unpacked_size_is_bounded_by_the_config_and_the_free_space() {
    let bytes = gzip(&app_tarball());
    let (_dir, result) = unpack_with("max", &bytes, &limits(10_000, 1 << 40));
    assert_eq!(
        result.unwrap_err().to_string(),
        "tarball entry big would bring the app to more than 10000 bytes (max_unpacked_bytes in /h/etc/sarge.yaml)"
    );
    let (_dir, result) = unpack_with("free", &bytes, &limits(1 << 30, 10_000));
    assert_eq!(
        result.unwrap_err().to_string(),
        "tarball entry big would bring the app to more than the 10000 bytes free on /h/var/instances"
    );
    // The data and a header's worth (512 bytes) per entry.
    let (_dir, result) = unpack_with("fits", &bytes, &limits(21_031, 21_031));
    assert_eq!(result.unwrap(), 2);
    let (_dir, result) = unpack_with("header", &bytes, &limits(21_030, 1 << 40));
    assert_eq!(
        result.unwrap_err().to_string(),
        "tarball entry big would bring the app to more than 21030 bytes (max_unpacked_bytes in /h/etc/sarge.yaml)"
    );
    let (_dir, result) = unpack_with(
        "inodes",
        &bytes,
        &Limits {
            free_inodes: 1,
            ..limits(1 << 30, 1 << 40)
        },
    );
    assert_eq!(
        result.unwrap_err().to_string(),
        "tarball entry big would need more than the 1 inodes free on /h/var/instances"
    );
    // Zeros after the tar's end count too: they cost the time to inflate.
    let padded = gzip(&[app_tarball(), vec![0; 100_000]].concat());
    let (_dir, result) = unpack_with("padding", &padded, &limits(50_000, 1 << 40));
    assert_eq!(
        result.unwrap_err().to_string(),
        "cannot unpack the tarball: it has more than 28969 bytes after the end of its tar archive (max_unpacked_bytes in /h/etc/sarge.yaml)"
    );
}

#[test]
fn extension_headers_are_bounded_before_they_are_read() {
    let big = vec![b'a'; 5000];
    assert_eq!(
        refused(
            "longname",
            &tarball(&[
                ("././@LongLink", EntryType::GNULongName, &big, ""),
                ("x", EntryType::Regular, b"x", ""),
            ])
        ),
        "tarball entry ././@LongLink has a long name of 5000 bytes (at most 4096)"
    );
    assert_eq!(
        refused(
            "pax",
            &tarball(&[
                ("pax", EntryType::XHeader, &vec![b'a'; 70_000], ""),
                ("x", EntryType::Regular, b"x", ""),
            ])
        ),
        "tarball entry pax has a PAX header of 70000 bytes (at most 65536)"
    );
    // Within bounds, long names and PAX paths name the entry.
    let long = format!("{}/file", "d".repeat(150));
    let mut builder = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(2);
    header.set_mode(0o644);
    builder.append_data(&mut header, &long, &b"hi"[..]).unwrap();
    let pax_name = format!("{}/pax", "p".repeat(150));
    builder
        .append_pax_extensions([("path", pax_name.as_bytes())])
        .unwrap();
    let mut header = tar::Header::new_ustar();
    header.set_path("short").unwrap();
    header.set_size(1);
    header.set_mode(0o644);
    header.set_cksum();
    builder.append(&header, &b"p"[..]).unwrap();
    let (dir, result) = unpack("names", &builder.into_inner().unwrap());
    assert_eq!(result.unwrap(), 2);
    assert_eq!(std::fs::read(dir.0.join(&long)).unwrap(), b"hi");
    assert_eq!(std::fs::read(dir.0.join(&pax_name)).unwrap(), b"p");
}

#[test]
fn links_are_resolved_through_the_other_links() {
    assert_eq!(
        refused(
            "later-link",
            &tarball(&[
                ("a", EntryType::Symlink, b"", "b/.."),
                ("b", EntryType::Symlink, b"", "."),
            ])
        ),
        "tarball entry a is a link to b/.. that resolves outside the app folder"
    );
    assert_eq!(
        refused(
            "chain",
            &tarball(&[
                ("s", EntryType::Symlink, b"", "."),
                ("d/x", EntryType::Regular, b"", ""),
                ("d/up", EntryType::Symlink, b"", "../s/s/x/../.."),
            ])
        ),
        "tarball entry d/up is a link to ../s/s/x/../.. that resolves outside the app folder"
    );
    assert_eq!(
        refused(
            "loop",
            &tarball(&[
                ("l", EntryType::Symlink, b"", "m"),
                ("m", EntryType::Symlink, b"", "l")
            ])
        ),
        "tarball entry l is a link that goes through more than 40 links"
    );
    assert_eq!(
        refused(
            "hardlink-to-link",
            &tarball(&[
                ("sub/x", EntryType::Symlink, b"", "../f"),
                ("x", EntryType::Link, b"", "sub/x"),
            ])
        ),
        "tarball entry x is a hard link to sub/x, which is not an earlier file of the tarball"
    );
    // Links that stay inside, however they get there, are kept.
    let (dir, result) = unpack(
        "inside",
        &tarball(&[
            ("s", EntryType::Symlink, b"", "."),
            ("src/app.py", EntryType::Regular, b"print(1)\n", ""),
            ("src/up", EntryType::Symlink, b"", "../s/src/.."),
            ("app.py", EntryType::Symlink, b"", "s/s/src/up/src/app.py"),
            ("hard.py", EntryType::Link, b"", "src/app.py"),
        ]),
    );
    assert_eq!(result.unwrap(), 5);
    assert_eq!(std::fs::read(dir.0.join("app.py")).unwrap(), b"print(1)\n");
    assert_eq!(std::fs::read(dir.0.join("hard.py")).unwrap(), b"print(1)\n");
}

#[test]
fn modes_keep_the_owner_bits_only() {
    let mut builder = tar::Builder::new(Vec::new());
    for (name, kind, mode) in [
        ("ro/", EntryType::Directory, 0o555),
        ("ro/suid", EntryType::Regular, 0o4755),
        ("ro/sgid", EntryType::Regular, 0o2775),
        ("open/", EntryType::Directory, 0o1777),
        ("open/shared", EntryType::Regular, 0o666),
    ] {
        let mut header = tar::Header::new_gnu();
        header.set_path(name).unwrap();
        header.set_entry_type(kind);
        header.set_size(0);
        header.set_mode(mode);
        header.set_mtime(1_600_000_000);
        header.set_cksum();
        builder.append(&header, &b""[..]).unwrap();
    }
    let (dir, result) = unpack("modes", &builder.into_inner().unwrap());
    assert_eq!(result.unwrap(), 5);
    let mode = |name: &str| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(dir.0.join(name))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777
    };
    // Owner bits only; folders stay writable by their owner, so sarge can
    // remove them.
    assert_eq!(mode("ro"), 0o700);
    assert_eq!(mode("ro/suid"), 0o700);
    assert_eq!(mode("ro/sgid"), 0o700);
    assert_eq!(mode("open"), 0o700);
    assert_eq!(mode("open/shared"), 0o600);
    let modified = std::fs::metadata(dir.0.join("ro/suid"))
        .unwrap()
        .modified()
        .unwrap();
    assert_eq!(
        modified,
        std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_600_000_000)
    );
}

#[test]
fn write_errors_keep_the_reason_from_the_system() {
    assert_eq!(
        refused(
            "notdir",
            &tarball(&[
                ("f", EntryType::Regular, b"x", ""),
                ("f/x", EntryType::Regular, b"x", ""),
            ])
        ),
        "tarball entry f/x cannot be written: Not a directory (os error 20)"
    );
}

#[test]
fn names_in_errors_are_cut_and_escaped() {
    let name = format!("../{}", "n".repeat(1000));
    let mut data = name.clone().into_bytes();
    data.push(0);
    assert_eq!(
        refused(
            "echo",
            &tarball(&[
                ("././@LongLink", EntryType::GNULongName, &data, ""),
                ("x", EntryType::Regular, b"x", ""),
            ])
        ),
        format!(
            "tarball entry {}... (1003 bytes) climbs out of the app folder with `..`",
            &name[..200]
        )
    );
    assert_eq!(
        refused(
            "newline",
            &tarball(&[("a\nerror: b", EntryType::Fifo, b"", "")])
        ),
        "tarball entry a\\nerror: b is a fifo"
    );
}

/// A tar stream whose entries may have names of any length (GNU long
/// names), each with its own mode.
fn long_tarball(entries: &[(&str, EntryType, &[u8], u32)]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (name, kind, data, mode) in entries {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(*kind);
        header.set_size(data.len() as u64);
        header.set_mode(*mode);
        header.set_mtime(1_600_000_000);
        builder.append_data(&mut header, name, *data).unwrap();
    }
    builder.into_inner().unwrap()
}

fn mode_of(path: &camino::Utf8Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::symlink_metadata(path)
        .unwrap()
        .permissions()
        .mode()
        & 0o7777
}

/// Reads `relative` under `dir` through a descriptor of `dir`, as a path
/// too long to name from `/` can only be read.
fn read_at(dir: &camino::Utf8Path, relative: &str) -> Vec<u8> {
    let root = rustix::fs::open(
        dir.as_std_path(),
        OFlags::RDONLY | OFlags::DIRECTORY,
        Mode::empty(),
    )
    .unwrap();
    let file = rustix::fs::openat(&root, relative, OFlags::RDONLY, Mode::empty()).unwrap();
    let mut data = Vec::new();
    File::from(file).read_to_end(&mut data).unwrap();
    data
}

#[test]
fn deep_folders_are_made_however_deep_and_long_the_name() {
    // 2,040 folders deep, 4,081 bytes: with the app folder's own path in
    // front it would be longer than the system takes (PATH_MAX), but every
    // entry is created relative to the app folder.
    let deep = format!("{}f", "d/".repeat(2040));
    let bytes = long_tarball(&[
        (&deep, EntryType::Regular, b"deep", 0o644),
        (
            "a/b/c/d/e/f/g/h/i/j/k/l/m/n/o/p/file",
            EntryType::Regular,
            b"p",
            0o644,
        ),
    ]);
    let (dir, result) = unpack("deep", &bytes);
    assert_eq!(result.unwrap(), 2);
    assert!(dir.0.join(&deep).as_str().len() > 4096);
    assert_eq!(read_at(&dir.0, &deep), b"deep");
    assert_eq!(
        std::fs::read(dir.0.join("a/b/c/d/e/f/g/h/i/j/k/l/m/n/o/p/file")).unwrap(),
        b"p"
    );
}

#[test]
fn long_names_unpack_up_to_the_file_system_limit() {
    let longest = format!("{}/{}", "p".repeat(255), "f".repeat(255));
    let too_long = "x".repeat(256);
    let (dir, result) = unpack(
        "long",
        &long_tarball(&[(&longest, EntryType::Regular, b"ok", 0o644)]),
    );
    assert_eq!(result.unwrap(), 1);
    assert_eq!(std::fs::read(dir.0.join(&longest)).unwrap(), b"ok");
    assert_eq!(
        refused(
            "too-long",
            &long_tarball(&[(&too_long, EntryType::Regular, b"no", 0o644)])
        ),
        format!(
            "tarball entry {} cannot be written: File name too long (os error 36)",
            excerpt(&too_long)
        )
    );
}

#[test]
fn a_folder_entry_after_its_files_gets_its_mode() {
    // `d` is made as the parent of `d/x` first, with the default mode,
    // then its own entry comes (as `tar --no-recursion` or a reordered
    // tarball has it); it ends with the owner's bits like any folder.
    let (dir, result) = unpack(
        "dir-after",
        &long_tarball(&[
            ("d/x", EntryType::Regular, b"x", 0o644),
            ("d/e/y", EntryType::Regular, b"y", 0o644),
            ("d/e/", EntryType::Directory, b"", 0o555),
            ("d/", EntryType::Directory, b"", 0o1777),
        ]),
    );
    assert_eq!(result.unwrap(), 4);
    assert_eq!(mode_of(&dir.0.join("d")), 0o700);
    assert_eq!(mode_of(&dir.0.join("d/e")), 0o700);
    assert_eq!(std::fs::read(dir.0.join("d/x")).unwrap(), b"x");
    assert_eq!(std::fs::read(dir.0.join("d/e/y")).unwrap(), b"y");
}

#[test]
fn a_folder_entry_twice_is_one_folder() {
    let (dir, result) = unpack(
        "dir-twice",
        &long_tarball(&[
            ("d/", EntryType::Directory, b"", 0o755),
            ("d/x", EntryType::Regular, b"x", 0o644),
            ("d/", EntryType::Directory, b"", 0o500),
        ]),
    );
    assert_eq!(result.unwrap(), 3);
    assert_eq!(mode_of(&dir.0.join("d")), 0o700);
    assert_eq!(std::fs::read(dir.0.join("d/x")).unwrap(), b"x");
}

#[test]
fn files_folders_and_links_do_not_replace_a_folder() {
    for (name, kind, link) in [
        ("file", EntryType::Regular, ""),
        ("symlink", EntryType::Symlink, "x"),
        ("hardlink", EntryType::Link, "x"),
    ] {
        assert_eq!(
            refused(
                &format!("over-dir-{name}"),
                &tarball(&[
                    ("x", EntryType::Regular, b"x", ""),
                    ("d/", EntryType::Directory, b"", ""),
                    ("d/inside", EntryType::Regular, b"i", ""),
                    ("d", kind, b"", link),
                ])
            ),
            "tarball entry d cannot be written: Is a directory (os error 21)",
            "{name}"
        );
    }
    assert_eq!(
        refused(
            "dir-over-file",
            &tarball(&[
                ("f", EntryType::Regular, b"x", ""),
                ("f/", EntryType::Directory, b"", ""),
            ])
        ),
        "tarball entry f/ cannot be written: Not a directory (os error 20)"
    );
    assert_eq!(
        refused(
            "under-link",
            &tarball(&[
                ("f", EntryType::Regular, b"x", ""),
                ("l", EntryType::Link, b"", "f"),
                ("l/x", EntryType::Regular, b"x", ""),
            ])
        ),
        "tarball entry l/x cannot be written: Not a directory (os error 20)"
    );
}

#[test]
fn a_later_entry_of_the_same_name_replaces_the_earlier_one() {
    let (dir, result) = unpack(
        "replace",
        &tarball(&[
            ("a", EntryType::Regular, b"first", ""),
            ("a", EntryType::Regular, b"second", ""),
            ("b", EntryType::Regular, b"b", ""),
            ("b", EntryType::Link, b"", "a"),
            ("c", EntryType::Regular, b"c", ""),
            ("c", EntryType::Symlink, b"", "a"),
            ("d", EntryType::Symlink, b"", "a"),
        ]),
    );
    assert_eq!(result.unwrap(), 7);
    assert_eq!(std::fs::read(dir.0.join("a")).unwrap(), b"second");
    assert_eq!(std::fs::read(dir.0.join("b")).unwrap(), b"second");
    assert_eq!(std::fs::read_link(dir.0.join("c")).unwrap(), Path::new("a"));
    // A link is never replaced: a file written there would go where it
    // points.
    assert_eq!(
        refused(
            "replace-link",
            &tarball(&[
                ("d", EntryType::Symlink, b"", "a"),
                ("d", EntryType::Regular, b"x", ""),
            ])
        ),
        "tarball entry d would replace a link"
    );
}

#[test]
fn read_only_files_are_written_then_keep_their_mode() {
    let data = vec![b'r'; 100_000];
    let (dir, result) = unpack(
        "read-only",
        &long_tarball(&[
            ("ro", EntryType::Regular, &data, 0o444),
            ("none", EntryType::Regular, b"n", 0o000),
            ("x", EntryType::Regular, b"#!/bin/sh\n", 0o755),
        ]),
    );
    assert_eq!(result.unwrap(), 3);
    assert_eq!(mode_of(&dir.0.join("ro")), 0o400);
    assert_eq!(mode_of(&dir.0.join("none")), 0o000);
    assert_eq!(mode_of(&dir.0.join("x")), 0o700);
    assert_eq!(std::fs::read(dir.0.join("ro")).unwrap(), data);
}

#[test]
fn modes_are_set_again_when_the_umask_is_unknown_or_strips_them() {
    let bytes = long_tarball(&[
        ("d/", EntryType::Directory, b"", 0o755),
        ("d/x", EntryType::Regular, b"x", 0o755),
        ("e/y", EntryType::Regular, b"y", 0o600),
        ("e/", EntryType::Directory, b"", 0o755),
    ]);
    // What unpack_tarball does, with the umask it would have read replaced.
    for (name, umask) in [("unknown", None), ("stripping", Some(0o777))] {
        let dir = TempDir::new(&format!("umask-{name}"));
        let limits = limits(1 << 30, 1 << 40);
        let mut unpacker = Unpacker::new(dir.0.as_std_path(), &limits).unwrap();
        unpacker.umask = umask;
        unpacker.unpack(&mut bytes.as_slice(), false).unwrap();
        assert_eq!(unpacker.finish().unwrap(), 4);
        assert_eq!(mode_of(&dir.0.join("d")), 0o700, "{name}");
        assert_eq!(mode_of(&dir.0.join("d/x")), 0o700, "{name}");
        assert_eq!(mode_of(&dir.0.join("e")), 0o700, "{name}");
        assert_eq!(mode_of(&dir.0.join("e/y")), 0o600, "{name}");
    }
    // This process has a umask, and /proc tells it.
    assert!(umask().is_some_and(|umask| umask <= 0o777));
}

#[test]
fn names_with_a_nul_byte_are_refused() {
    let mut builder = tar::Builder::new(Vec::new());
    builder
        .append_pax_extensions([("path", &b"a\0b"[..])])
        .unwrap();
    let mut header = tar::Header::new_ustar();
    header.set_path("short").unwrap();
    header.set_size(1);
    header.set_mode(0o644);
    header.set_cksum();
    builder.append(&header, &b"x"[..]).unwrap();
    assert_eq!(
        refused("nul", &builder.into_inner().unwrap()),
        "tarball entry a\\0b has a NUL byte in its name"
    );
    let mut builder = tar::Builder::new(Vec::new());
    builder
        .append_pax_extensions([("linkpath", &b"a\0b"[..])])
        .unwrap();
    let mut header = tar::Header::new_ustar();
    header.set_path("l").unwrap();
    header.set_entry_type(EntryType::Symlink);
    header.set_size(0);
    header.set_mode(0o777);
    header.set_cksum();
    builder.append(&header, &b""[..]).unwrap();
    assert_eq!(
        refused("nul-link", &builder.into_inner().unwrap()),
        "tarball entry l is a link whose target has a NUL byte"
    );
}

#[test]
fn the_app_folder_must_be_a_folder() {
    let dir = TempDir::new("not-a-folder");
    let file = dir.0.join("file");
    std::fs::write(&file, b"").unwrap();
    let message = unpack_tarball(&app_tarball()[..], &file, &limits(1 << 30, 1 << 40))
        .unwrap_err()
        .to_string();
    assert!(
        message.starts_with(&format!(
            "cannot open the app folder {file}: Not a directory"
        )),
        "{message}"
    );
}

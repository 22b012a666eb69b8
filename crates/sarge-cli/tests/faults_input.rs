//! Hostile or broken input: a tarball cut short, one that unpacks to far
//! more than it weighs, names and headers meant to exhaust memory, links
//! that resolve out of the app through other links. Each is refused with
//! one error naming the culprit, and the running version keeps serving
//! with `$SARGE_HOME` unchanged.

#![allow(clippy::unwrap_used)]

mod common;

use std::io::Write;
use std::os::unix::fs::PermissionsExt;

use common::*;
use tar::EntryType;

/// A tarball of raw entries (name, type, data, link target, mode), with
/// its end-of-archive marker. Names are written as they are, so hostile
/// ones the `tar` builder would refuse can be written too.
fn tarball(entries: &[(&str, EntryType, &[u8], &str, u32)]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (name, entry_type, data, link, mode) in entries {
        let mut header = tar::Header::new_gnu();
        header.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        header.set_entry_type(*entry_type);
        header.set_size(data.len() as u64);
        header.set_mode(*mode);
        if link.len() > 100 {
            // The builder writes a GNU long link name entry first.
            builder.append_link(&mut header, name, link).unwrap();
            continue;
        }
        header.as_old_mut().linkname[..link.len()].copy_from_slice(link.as_bytes());
        header.set_cksum();
        builder.append(&header, *data).unwrap();
    }
    builder.into_inner().unwrap()
}

fn hello_file(name: &str) -> Vec<u8> {
    std::fs::read(hello_app().join(name)).unwrap()
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(bytes).unwrap();
    gz.finish().unwrap()
}

/// A home serving the hello app whose config holds `extra`.
fn serving_home(name: &str, extra: &str) -> TestHome {
    let home = TestHome::new(name, "  MESSAGE: old");
    home.write_config("  MESSAGE: old", extra);
    home.deploy_ok(&hello_app(), "web");
    home
}

fn refuse_all(home: &TestHome, cases: Vec<(&str, Vec<u8>, &str)>) {
    let before = home.snapshot();
    for (case, bytes, expected) in cases {
        let output = home.deploy_bytes(&bytes, "web");
        let message = stderr(&output);
        assert_refused(
            home,
            &before,
            Refusal {
                case,
                output,
                expected,
            },
        );
        // An error never echoes a name or header at length.
        assert!(
            message.len() < 1000,
            "{case}: error of {} bytes",
            message.len()
        );
    }
}

#[test]
fn truncated_or_corrupt_tarballs_are_refused_saying_so() {
    let home = serving_home("truncated", "");
    let full = app_tarball_with(&[("big.bin", EntryType::Regular, &[b'x'; 30_000], "")]);
    // The builder ends a tarball with exactly two zero blocks.
    let unmarked = full[..full.len() - 1024].to_vec();
    let gz = gzip(&full);
    let mut bad_crc = gz.clone();
    let crc_at = bad_crc.len() - 8;
    bad_crc[crc_at] ^= 0xff;
    let mut bad_length = gz.clone();
    let length_at = bad_length.len() - 4;
    bad_length[length_at] ^= 0x01;
    let cases = vec![
        (
            "plain tar without its end-of-archive marker",
            unmarked.clone(),
            "cannot unpack the tarball: it is truncated",
        ),
        (
            "plain tar with one of the two end blocks",
            full[..full.len() - 512].to_vec(),
            "cannot unpack the tarball: it is truncated",
        ),
        (
            "plain tar cut inside a file",
            full[..full.len() - 20_000].to_vec(),
            "cannot unpack the tarball: it is truncated",
        ),
        (
            "gzip of a tar without its end-of-archive marker",
            gzip(&unmarked),
            "cannot unpack the tarball: it is truncated",
        ),
        (
            "gzip without its trailer",
            gz[..gz.len() - 8].to_vec(),
            "cannot unpack the tarball: it is truncated",
        ),
        (
            "gzip with half its trailer",
            gz[..gz.len() - 4].to_vec(),
            "cannot unpack the tarball: it is truncated",
        ),
        (
            "gzip cut in the middle",
            gz[..gz.len() / 2].to_vec(),
            "cannot unpack the tarball: it is truncated",
        ),
        (
            "gzip with a wrong CRC",
            bad_crc,
            "cannot unpack the tarball: it is corrupt",
        ),
        (
            "gzip with a wrong length",
            bad_length,
            "cannot unpack the tarball: it is corrupt",
        ),
        (
            "gzip followed by garbage",
            [gz.as_slice(), b"garbage after the gzip stream"].concat(),
            "cannot unpack the tarball: it has 29 bytes of garbage after its gzip stream",
        ),
    ];
    refuse_all(&home, cases);
    // Zero padding after the gzip stream, as tape-blocking tools add, is
    // not garbage.
    let padded = [gz.as_slice(), &[0; 512]].concat();
    let output = home.deploy_bytes(&padded, "web");
    assert!(output.status.success(), "{}", stderr(&output));
}

#[test]
fn oversized_inputs_are_refused_with_bounded_errors() {
    // Small enough that the test stays fast; the hello app fits.
    let home = serving_home("oversized", "max_unpacked_bytes: 2000000");
    let config = home.config_path();
    let long_name = format!("../{}", "a".repeat(2997));
    let app = |procfile: &[u8], requirements: &[u8]| {
        tarball(&[
            (
                "app.py",
                EntryType::Regular,
                &hello_file("app.py"),
                "",
                0o644,
            ),
            ("Procfile", EntryType::Regular, procfile, "", 0o644),
            (
                "requirements.txt",
                EntryType::Regular,
                requirements,
                "",
                0o644,
            ),
        ])
    };
    let big_procfile = [
        hello_file("Procfile").as_slice(),
        &b"# padding\n".repeat(7000),
    ]
    .concat();
    let big_requirements = [
        hello_file("requirements.txt").as_slice(),
        &b"# padding\n".repeat(110_000),
    ]
    .concat();
    let cases = vec![
        (
            "gzip bomb",
            gzip(&app_tarball_with(&[(
                "big.bin",
                EntryType::Regular,
                &vec![0; 3_000_000],
                "",
            )])),
            &*format!(
                "tarball entry big.bin would bring the app to more than 2000000 bytes (max_unpacked_bytes in {})",
                config.display()
            )
            .leak(),
        ),
        (
            "16 MiB GNU long name",
            app_tarball_with(&[
                ("././@LongLink", EntryType::GNULongName, &vec![b'a'; 16 << 20], ""),
                ("x", EntryType::Regular, b"x", ""),
            ]),
            "tarball entry ././@LongLink has a long name of 16777216 bytes (at most 4096)",
        ),
        (
            "16 MiB GNU long link name",
            app_tarball_with(&[
                ("././@LongLink", EntryType::GNULongLink, &vec![b'a'; 16 << 20], ""),
                ("x", EntryType::Symlink, b"", "x"),
            ]),
            "tarball entry ././@LongLink has a long link name of 16777216 bytes (at most 4096)",
        ),
        (
            "16 MiB PAX header",
            app_tarball_with(&[
                ("pax", EntryType::XHeader, &vec![b'a'; 16 << 20], ""),
                ("x", EntryType::Regular, b"x", ""),
            ]),
            "tarball entry pax has a PAX header of 16777216 bytes (at most 65536)",
        ),
        (
            "long name echoed",
            {
                let mut data = long_name.clone().into_bytes();
                data.push(0);
                app_tarball_with(&[
                    ("././@LongLink", EntryType::GNULongName, &data, ""),
                    ("x", EntryType::Regular, b"x", ""),
                ])
            },
            &*format!(
                "tarball entry {}... (3000 bytes) climbs out of the app folder with `..`",
                &long_name[..200]
            )
            .leak(),
        ),
        (
            "name with a line break",
            app_tarball_with(&[("a\nerror: b", EntryType::Fifo, b"", "")]),
            "tarball entry a\\nerror: b is a fifo",
        ),
        (
            "64 KiB Procfile",
            app(&big_procfile, &hello_file("requirements.txt")),
            "Procfile is larger than 65536 bytes",
        ),
        (
            "1 MiB requirements.txt",
            app(&hello_file("Procfile"), &big_requirements),
            "requirements.txt is larger than 1048576 bytes",
        ),
        (
            "requirements.txt a folder",
            tarball(&[
                ("app.py", EntryType::Regular, &hello_file("app.py"), "", 0o644),
                ("Procfile", EntryType::Regular, &hello_file("Procfile"), "", 0o644),
                ("requirements.txt/", EntryType::Directory, b"", "", 0o755),
            ]),
            "requirements.txt is not a regular file (it is a folder)",
        ),
        (
            "requirements.txt a dangling link",
            tarball(&[
                ("app.py", EntryType::Regular, &hello_file("app.py"), "", 0o644),
                ("Procfile", EntryType::Regular, &hello_file("Procfile"), "", 0o644),
                ("requirements.txt", EntryType::Symlink, b"", "nothing", 0o777),
            ]),
            "requirements.txt is not a regular file (it is a link to nothing)",
        ),
    ];
    refuse_all(&home, cases);
}

#[test]
fn links_that_resolve_outside_the_app_are_refused() {
    let home = serving_home("links", "");
    let up = format!("{}{}etc/passwd", "s/".repeat(30), "../".repeat(30));
    let app_with_links = |links: &[(&str, EntryType, &[u8], &str, u32)]| {
        let mut entries = vec![
            (
                "app.py",
                EntryType::Regular,
                &*hello_file("app.py").leak(),
                "",
                0o644,
            ),
            (
                "requirements.txt",
                EntryType::Regular,
                &*hello_file("requirements.txt").leak(),
                "",
                0o644,
            ),
        ];
        entries.extend_from_slice(links);
        tarball(&entries)
    };
    let procfile = hello_file("Procfile");
    let cases = vec![
        (
            "a link through a later link to .",
            app_with_links(&[
                ("Procfile", EntryType::Regular, &procfile, "", 0o644),
                ("a", EntryType::Symlink, b"", "b/..", 0o777),
                ("b", EntryType::Symlink, b"", ".", 0o777),
            ]),
            "tarball entry a is a link to b/.. that resolves outside the app folder",
        ),
        (
            "a chain of links",
            app_with_links(&[
                ("Procfile", EntryType::Regular, &procfile, "", 0o644),
                ("s", EntryType::Symlink, b"", ".", 0o777),
                ("d/", EntryType::Directory, b"", "", 0o755),
                ("d/up", EntryType::Symlink, b"", "../s/..", 0o777),
                ("top", EntryType::Symlink, b"", "d/up", 0o777),
            ]),
            "tarball entry d/up is a link to ../s/.. that resolves outside the app folder",
        ),
        (
            "a Procfile linked to /etc/passwd through links",
            app_with_links(&[
                ("s", EntryType::Symlink, b"", ".", 0o777),
                ("Procfile", EntryType::Symlink, b"", &up, 0o777),
            ]),
            "tarball entry Procfile is a link to s/s/s/",
        ),
        (
            "a link loop",
            app_with_links(&[
                ("Procfile", EntryType::Regular, &procfile, "", 0o644),
                ("loop", EntryType::Symlink, b"", "loop", 0o777),
            ]),
            "tarball entry loop is a link that goes through more than 40 links",
        ),
        (
            "a hard link to a link",
            app_with_links(&[
                ("Procfile", EntryType::Regular, &procfile, "", 0o644),
                ("sub/", EntryType::Directory, b"", "", 0o755),
                ("sub/x", EntryType::Symlink, b"", "../app.py", 0o777),
                ("x", EntryType::Link, b"", "sub/x", 0o644),
            ]),
            "tarball entry x is a hard link to sub/x, which is not an earlier file of the tarball",
        ),
    ];
    refuse_all(&home, cases);
    let output = home.deploy_bytes(
        &app_with_links(&[
            ("s", EntryType::Symlink, b"", ".", 0o777),
            ("Procfile", EntryType::Symlink, b"", &up, 0o777),
        ]),
        "web",
    );
    assert!(!stderr(&output).contains("root:"), "{}", stderr(&output));
}

#[test]
fn modes_are_tamed_and_a_procfile_may_have_a_bom_or_be_an_inner_link() {
    let home = serving_home("modes", "");
    let procfile = [b"\xef\xbb\xbf".as_slice(), &hello_file("Procfile")].concat();
    let bytes = tarball(&[
        (
            "app.py",
            EntryType::Regular,
            &hello_file("app.py"),
            "",
            0o644,
        ),
        (
            "requirements.txt",
            EntryType::Regular,
            &hello_file("requirements.txt"),
            "",
            0o644,
        ),
        ("config/", EntryType::Directory, b"", "", 0o1777),
        ("config/Procfile", EntryType::Regular, &procfile, "", 0o666),
        (
            "Procfile",
            EntryType::Symlink,
            b"",
            "config/Procfile",
            0o777,
        ),
        ("bin/", EntryType::Directory, b"", "", 0o500),
        ("bin/suid", EntryType::Regular, b"#!/bin/sh\n", "", 0o6755),
        ("bin/sticky", EntryType::Regular, b"#!/bin/sh\n", "", 0o1707),
    ]);
    let output = home.deploy_bytes(&bytes, "web");
    assert!(output.status.success(), "{}", stderr(&output));
    let release = home.instance_of("web")["release"]
        .as_str()
        .unwrap()
        .to_owned();
    let app = home.root.join("var/releases").join(release).join("app");
    let mode = |path: &str| {
        std::fs::symlink_metadata(app.join(path))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777
    };
    // The owner's bits only: no setuid, setgid or sticky bit, nothing
    // others can read or write; folders stay writable by sarge so that it
    // can remove the instance later.
    assert_eq!(mode("config"), 0o700, "config/");
    assert_eq!(mode("config/Procfile"), 0o600, "config/Procfile");
    assert_eq!(mode("bin"), 0o700, "bin/");
    assert_eq!(mode("bin/suid"), 0o700, "bin/suid");
    assert_eq!(mode("bin/sticky"), 0o700, "bin/sticky");
    assert_eq!(mode("app.py"), 0o600, "app.py");
    assert_eq!(http_get(home.stable, "/").unwrap().0, 200);
}

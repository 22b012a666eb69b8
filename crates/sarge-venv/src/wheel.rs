//! Which requirement lines a wheel folder can satisfy for one interpreter.
//!
//! A server's `dist/` is its only package source, so before a deploy the
//! client asks which lines of `requirements.txt` it lacks a wheel for. The
//! answer must be for the server's own interpreter: a `cp311` wheel is no
//! use to Python 3.12, a `musllinux` one none to glibc. So the interpreter
//! is asked once for the tags it supports ([`PythonTags::query`], through
//! `packaging.tags` when importable, pip's vendored copy otherwise, else a
//! computation of the CPython tags of a Linux/glibc interpreter), and each
//! wheel's file name ([`WheelName`]) is matched against them.
//!
//! A pinned line (`Flask==3.1.3`) needs a compatible wheel of exactly that
//! version; any other line (`flask`, `flask>=3`) needs a compatible wheel
//! of that name. Names compare normalised ([`PackageName`], PEP 503), so
//! `Jinja2` matches `jinja2-3.1.6-py3-none-any.whl`. Option lines (`-r`,
//! `--only-binary`) and comments take no part; an environment marker is
//! not evaluated (the line is needed as if it applied).

use std::collections::HashSet;
use std::fmt;
use std::process::Command;
use std::str::FromStr;

use camino::{Utf8Path, Utf8PathBuf};

use crate::error::{Error, Result};

/// A package name normalised as PEP 503 says: lowercase, each run of `-`,
/// `_` and `.` one `-`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PackageName(String);

impl PackageName {
    /// `name` normalised.
    pub fn new(name: &str) -> Self {
        let mut normal = String::with_capacity(name.len());
        let mut in_separator = false;
        for c in name.chars() {
            if matches!(c, '-' | '_' | '.') {
                if !in_separator {
                    normal.push('-');
                }
                in_separator = true;
            } else {
                normal.extend(c.to_lowercase());
                in_separator = false;
            }
        }
        Self(normal)
    }

    /// The normalised name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PackageName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One compatibility tag, `interpreter-abi-platform` (`cp311-cp311-manylinux_2_17_x86_64`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WheelTag {
    /// `cp311`, `py3`.
    pub interpreter: String,
    /// `cp311`, `abi3`, `none`.
    pub abi: String,
    /// `manylinux_2_17_x86_64`, `linux_x86_64`, `any`.
    pub platform: String,
}

impl FromStr for WheelTag {
    type Err = String;

    fn from_str(text: &str) -> std::result::Result<Self, String> {
        let mut parts = text.splitn(3, '-');
        match (parts.next(), parts.next(), parts.next()) {
            (Some(interpreter), Some(abi), Some(platform))
                if !interpreter.is_empty() && !abi.is_empty() && !platform.is_empty() =>
            {
                Ok(Self {
                    interpreter: interpreter.to_ascii_lowercase(),
                    abi: abi.to_ascii_lowercase(),
                    platform: platform.to_ascii_lowercase(),
                })
            }
            _ => Err(format!("{text:?} is not an interpreter-abi-platform tag")),
        }
    }
}

impl fmt::Display for WheelTag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}-{}", self.interpreter, self.abi, self.platform)
    }
}

/// What a wheel's file name says: `{name}-{version}(-{build})?-{python}-{abi}-{platform}.whl`,
/// each tag part possibly a `.`-separated set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WheelName {
    /// The distribution, normalised.
    pub name: PackageName,
    /// The version as written in the file name.
    pub version: String,
    /// Every tag the wheel is built for (the product of the sets).
    pub tags: Vec<WheelTag>,
}

impl FromStr for WheelName {
    type Err = String;

    /// Parses a file name (no folder); the error says why it is not a wheel's.
    fn from_str(file_name: &str) -> std::result::Result<Self, String> {
        let Some(stem) = file_name.strip_suffix(".whl") else {
            return Err("does not end in .whl".to_owned());
        };
        let parts: Vec<&str> = stem.split('-').collect();
        if !(parts.len() == 5 || parts.len() == 6) || parts.iter().any(|part| part.is_empty()) {
            return Err(
                "is not a wheel file name (name-version[-build]-python-abi-platform.whl)"
                    .to_owned(),
            );
        }
        let n = parts.len();
        let mut tags = Vec::new();
        for interpreter in parts[n - 3].split('.') {
            for abi in parts[n - 2].split('.') {
                for platform in parts[n - 1].split('.') {
                    tags.push(WheelTag {
                        interpreter: interpreter.to_ascii_lowercase(),
                        abi: abi.to_ascii_lowercase(),
                        platform: platform.to_ascii_lowercase(),
                    });
                }
            }
        }
        Ok(Self {
            name: PackageName::new(parts[0]),
            version: parts[1].to_owned(),
            tags,
        })
    }
}

impl WheelName {
    /// Whether the wheel installs on an interpreter supporting `supported`.
    pub fn is_compatible(&self, supported: &HashSet<WheelTag>) -> bool {
        self.tags.iter().any(|tag| supported.contains(tag))
    }
}

/// What one requirement line asks for, as far as choosing a wheel goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    /// The line as written (comment stripped, trimmed).
    pub line: String,
    /// The package, normalised.
    pub name: PackageName,
    /// The version of a `name==version` pin (no wildcard).
    pub pinned: Option<String>,
}

impl Requirement {
    /// The requirement of one line, or `None` for a blank, comment or
    /// option line.
    pub fn parse(line: &str) -> Option<Self> {
        let line = match line.find(" #").or_else(|| line.find("\t#")) {
            Some(at) => &line[..at],
            None => line,
        }
        .trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with('-') {
            return None;
        }
        let end = line
            .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
            .unwrap_or(line.len());
        if end == 0 {
            return None;
        }
        let name = PackageName::new(&line[..end]);
        let mut rest = line[end..].trim_start();
        // Extras take no part in which wheel of the package is needed.
        if rest.starts_with('[') {
            rest = rest
                .find(']')
                .map_or("", |close| rest[close + 1..].trim_start());
        }
        let specifier = rest.split(';').next().unwrap_or("").trim();
        let pinned = specifier
            .strip_prefix("==")
            .map(str::trim)
            .filter(|version| {
                !version.is_empty()
                    && !version.contains('*')
                    && !version.contains(',')
                    && !version.contains('=')
            })
            .map(str::to_owned);
        Some(Self {
            line: line.to_owned(),
            name,
            pinned,
        })
    }

    /// Whether `wheel` satisfies this line on an interpreter supporting
    /// `supported`.
    pub fn is_satisfied_by(&self, wheel: &WheelName, supported: &HashSet<WheelTag>) -> bool {
        self.accepts(wheel) && wheel.is_compatible(supported)
    }

    /// Whether `wheel` is of this line's package and version.
    fn accepts(&self, wheel: &WheelName) -> bool {
        wheel.name == self.name
            && self
                .pinned
                .as_deref()
                .is_none_or(|pin| same_version(pin, &wheel.version))
    }
}

/// Two versions equal under PEP 440's most common normalisations: case,
/// a leading `v`, and trailing `.0`s of the release (`1.0 == 1`).
fn same_version(a: &str, b: &str) -> bool {
    fn normal(version: &str) -> String {
        let version = version.trim().to_ascii_lowercase();
        let version = version.strip_prefix('v').unwrap_or(&version);
        let release_end = version
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(version.len());
        let (release, rest) = version.split_at(release_end);
        let mut parts: Vec<String> = release
            .split('.')
            .map(|part| part.trim_start_matches('0'))
            .map(|part| if part.is_empty() { "0" } else { part }.to_owned())
            .collect();
        while parts.len() > 1 && parts.last().is_some_and(|part| part == "0") {
            parts.pop();
        }
        format!("{}{rest}", parts.join("."))
    }
    normal(a) == normal(b)
}

/// The lines of `requirements` (the text of a requirements file) that no
/// wheel in `wheels` satisfies for an interpreter supporting `supported`,
/// in file order.
pub fn missing_requirements(
    requirements: &str,
    wheels: &[WheelName],
    supported: &HashSet<WheelTag>,
) -> Vec<Requirement> {
    let compatible: Vec<&WheelName> = wheels
        .iter()
        .filter(|wheel| wheel.is_compatible(supported))
        .collect();
    joined_lines(requirements)
        .iter()
        .filter_map(|line| Requirement::parse(line))
        .filter(|requirement| !compatible.iter().any(|wheel| requirement.accepts(wheel)))
        .collect()
}

/// Lines with `\` continuations joined.
fn joined_lines(text: &str) -> Vec<String> {
    let mut lines = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        if let Some(start) = line.strip_suffix('\\') {
            current.push_str(start);
            continue;
        }
        current.push_str(line);
        lines.push(std::mem::take(&mut current));
    }
    if !current.is_empty() {
        lines.push(current);
    }
    lines
}

/// The wheels a folder holds, by file name; files that are not wheels
/// (and hidden ones, such as a wheel being written) are left out.
pub fn wheels_in(dir: &Utf8Path) -> Result<Vec<(Utf8PathBuf, WheelName)>> {
    let entries = std::fs::read_dir(dir).map_err(Error::io("list wheel folder", dir))?;
    let mut wheels = Vec::new();
    for entry in entries {
        let entry = entry.map_err(Error::io("list wheel folder", dir))?;
        let Ok(file_name) = entry.file_name().into_string() else {
            continue;
        };
        if file_name.starts_with('.') {
            continue;
        }
        if let Ok(wheel) = file_name.parse::<WheelName>() {
            wheels.push((dir.join(&file_name), wheel));
        }
    }
    wheels.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(wheels)
}

/// What an interpreter installs: its `major.minor` version and the wheel
/// tags it supports, most preferred first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PythonTags {
    /// `3.11`.
    pub python_version: String,
    /// The supported tags, most preferred first.
    pub tags: Vec<WheelTag>,
}

/// Prints the version, then one supported tag per line. `packaging.tags`
/// is the reference; without it (no packaging, no pip) the tags of a
/// CPython on Linux are computed as packaging does for the usual cases.
const TAGS_SCRIPT: &str = r#"
import sys
print("%d.%d" % sys.version_info[:2])
tags = None
for module in ("packaging.tags", "pip._vendor.packaging.tags"):
    try:
        mod = __import__(module, fromlist=["sys_tags"])
        tags = [str(t) for t in mod.sys_tags()]
        break
    except Exception:
        pass
if tags is None:
    import os, sysconfig
    major, minor = sys.version_info[:2]
    impl = "cp" if sys.implementation.name == "cpython" else "py"
    me = "%s%d%d" % (impl, major, minor)
    arch = sysconfig.get_platform().split("-", 1)[-1].replace("-", "_").replace(".", "_")
    plats = []
    try:
        libc = os.confstr("CS_GNU_LIBC_VERSION").split()[1].split(".")
        glibc = int(libc[1])
        for g in range(glibc, 16, -1):
            plats.append("manylinux_2_%d_%s" % (g, arch))
            if g == 17:
                plats.append("manylinux2014_%s" % arch)
    except Exception:
        pass
    plats.append("linux_%s" % arch)
    tags = []
    for p in plats:
        tags += [me + "-" + me + "-" + p, me + "-abi3-" + p, me + "-none-" + p]
    for m in range(minor - 1, 1, -1):
        for p in plats:
            tags.append("cp%d%d-abi3-%s" % (major, m, p))
    for p in plats:
        tags += ["py%d%d-none-%s" % (major, minor, p), "py%d-none-%s" % (major, p)]
    tags.append(me + "-none-any")
    for m in range(minor, -1, -1):
        tags.append("py%d%d-none-any" % (major, m))
        if m == minor:
            tags.append("py%d-none-any" % major)
for t in tags:
    print(t)
"#;

impl PythonTags {
    /// Asks `python` (run once) for its version and supported tags.
    pub fn query(python: &Utf8Path) -> Result<Self> {
        let output = Command::new(python.as_std_path())
            .arg("-c")
            .arg(TAGS_SCRIPT)
            .output()
            .map_err(|source| Error::Python {
                python: python.to_owned(),
                detail: format!("cannot be run ({source})"),
            })?;
        if !output.status.success() {
            return Err(Error::Python {
                python: python.to_owned(),
                detail: format!(
                    "failed to list its wheel tags ({}): {}",
                    output.status,
                    String::from_utf8_lossy(&output.stderr).trim()
                ),
            });
        }
        Self::parse(&String::from_utf8_lossy(&output.stdout)).ok_or_else(|| Error::Python {
            python: python.to_owned(),
            detail: "printed no version and wheel tags".to_owned(),
        })
    }

    /// Reads what [`TAGS_SCRIPT`] printed.
    fn parse(text: &str) -> Option<Self> {
        let mut lines = text.lines().map(str::trim).filter(|line| !line.is_empty());
        let python_version = lines.next()?.to_owned();
        let tags: Vec<WheelTag> = lines.filter_map(|line| line.parse().ok()).collect();
        (!tags.is_empty()).then_some(Self {
            python_version,
            tags,
        })
    }

    /// The tags as a set, for matching.
    pub fn tag_set(&self) -> HashSet<WheelTag> {
        self.tags.iter().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cp311_linux() -> HashSet<WheelTag> {
        [
            "cp311-cp311-manylinux_2_28_x86_64",
            "cp311-cp311-manylinux_2_17_x86_64",
            "cp311-abi3-manylinux_2_17_x86_64",
            "cp311-cp311-linux_x86_64",
            "cp311-none-any",
            "py3-none-any",
            "py311-none-any",
        ]
        .iter()
        .map(|tag| tag.parse().unwrap())
        .collect()
    }

    fn wheels(names: &[&str]) -> Vec<WheelName> {
        names.iter().map(|name| name.parse().unwrap()).collect()
    }

    fn missing(requirements: &str, names: &[&str]) -> Vec<String> {
        missing_requirements(requirements, &wheels(names), &cp311_linux())
            .into_iter()
            .map(|requirement| requirement.line)
            .collect()
    }

    #[test]
    fn names_are_normalised_as_pep_503_says() {
        assert_eq!(PackageName::new("Jinja2").as_str(), "jinja2");
        assert_eq!(
            PackageName::new("zope._-Interface").as_str(),
            "zope-interface"
        );
        assert_eq!(
            PackageName::new("markupsafe"),
            PackageName::new("MarkupSafe")
        );
    }

    #[test]
    fn a_wheel_name_gives_its_name_version_and_every_tag_of_its_sets() {
        let wheel: WheelName =
            "markupsafe-3.0.4-cp311-cp311-manylinux2014_x86_64.manylinux_2_17_x86_64.whl"
                .parse()
                .unwrap();
        assert_eq!(wheel.name.as_str(), "markupsafe");
        assert_eq!(wheel.version, "3.0.4");
        assert_eq!(wheel.tags.len(), 2);
        assert_eq!(
            wheel.tags[1].to_string(),
            "cp311-cp311-manylinux_2_17_x86_64"
        );
        let built: WheelName = "pkg-1.0-1-py3-none-any.whl".parse().unwrap();
        assert_eq!(built.version, "1.0");
        assert!("pkg-1.0.tar.gz".parse::<WheelName>().is_err());
        assert!("pkg-1.0-py3.whl".parse::<WheelName>().is_err());
    }

    #[test]
    fn a_pin_needs_that_version_for_this_interpreter_and_platform() {
        let requirements = "Flask==3.1.3\nMarkupSafe==3.0.4\n";
        assert!(missing(
            requirements,
            &[
                "flask-3.1.3-py3-none-any.whl",
                "markupsafe-3.0.4-cp311-cp311-manylinux_2_17_x86_64.whl"
            ]
        )
        .is_empty());
        // Another version, another Python, another platform: each missing.
        assert_eq!(
            missing(
                requirements,
                &[
                    "flask-3.1.2-py3-none-any.whl",
                    "markupsafe-3.0.4-cp312-cp312-manylinux_2_17_x86_64.whl",
                    "markupsafe-3.0.4-cp311-cp311-musllinux_1_2_x86_64.whl",
                    "markupsafe-3.0.4-cp311-cp311-macosx_11_0_arm64.whl",
                ]
            ),
            ["Flask==3.1.3", "MarkupSafe==3.0.4"]
        );
    }

    #[test]
    fn unpinned_lines_take_any_compatible_wheel_of_the_name() {
        let have = [
            "jinja2-3.1.6-py3-none-any.whl",
            "click-8.5.1-py3-none-any.whl",
        ];
        assert!(missing(
            "jinja2\nClick>=8 ; python_version >= '3'\nclick[extra]~=8.0\n",
            &have
        )
        .is_empty());
        assert_eq!(missing("werkzeug\n", &have), ["werkzeug"]);
    }

    #[test]
    fn comments_options_and_continuations_take_no_part() {
        let have = ["flask-3.1.3-py3-none-any.whl"];
        assert_eq!(
            missing(
                "# pinned\n\n--only-binary :all:\n-r other.txt\nflask==3.1.3  # web\nblinker==1.9.0 \\\n    --hash=sha256:abc\n",
                &have
            ),
            ["blinker==1.9.0     --hash=sha256:abc"]
        );
        let line = Requirement::parse("Flask == 3.1.3 ; python_version > '3'").unwrap();
        assert_eq!(line.pinned.as_deref(), Some("3.1.3"));
        assert_eq!(Requirement::parse("flask==3.*").unwrap().pinned, None);
    }

    #[test]
    fn versions_compare_after_normalising() {
        assert!(same_version("1.0", "1"));
        assert!(same_version("v2.01.0", "2.1"));
        assert!(!same_version("2.1", "2.10"));
        assert!(same_version("1.0RC1", "1rc1"));
    }

    #[test]
    fn this_machines_python_lists_its_tags() {
        let tags = PythonTags::query(Utf8Path::new("python3"))
            .expect("python3 is needed: run scripts/setup");
        assert!(tags.python_version.starts_with("3."), "{tags:?}");
        assert!(tags
            .tags
            .iter()
            .any(|tag| tag.to_string() == "py3-none-any"));
    }

    #[test]
    fn the_fallback_tags_match_what_packaging_computes_for_common_wheels() {
        // Run the script with packaging hidden: the computed list.
        let script = format!(
            "import sys\nsys.modules['packaging'] = None\nsys.modules['pip'] = None\n{TAGS_SCRIPT}"
        );
        let output = Command::new("python3")
            .arg("-c")
            .arg(script)
            .output()
            .expect("python3 is needed: run scripts/setup");
        let tags = PythonTags::parse(&String::from_utf8_lossy(&output.stdout)).unwrap();
        let set = tags.tag_set();
        let version = tags.python_version.replace('.', "");
        for wheel in [
            "x-1-py3-none-any.whl".to_owned(),
            format!("x-1-cp{version}-cp{version}-manylinux_2_17_x86_64.manylinux2014_x86_64.whl"),
            "x-1-cp38-abi3-manylinux_2_17_x86_64.whl".to_owned(),
        ] {
            let wheel: WheelName = wheel.parse().unwrap();
            if std::env::consts::ARCH == "x86_64" {
                assert!(
                    wheel.is_compatible(&set),
                    "{wheel:?} not in {:?}",
                    tags.tags
                );
            }
        }
    }
}

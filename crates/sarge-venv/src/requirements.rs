//! What a requirements file may ask of the installer: package names and
//! versions, installed from the wheel folder only.
//!
//! uv and pip obey options written inside the file: `-r /etc/passwd` makes
//! uv read a file outside the app (and its error echoes a line of it),
//! `-e /path` installs a folder from anywhere, and `--index-url`,
//! `--find-links` or `pkg @ https://...` add package sources beside the
//! wheel folder. So before the key is computed or anything runs, the file
//! and every file it includes are read here, only from inside the
//! requirements file's own folder (the app), and any line that could make
//! the installer read elsewhere is refused, naming the file and line.
//!
//! Path requirements are refused even inside the app (`./wheels/x.whl`,
//! `-e .`): the environment is shared between instances and keyed on the
//! requirements' text, so a wheel shipped in one release's folder would be
//! installed without its content in the key, and an editable install
//! would tie every later instance to one instance's folder. Wheels belong
//! in the wheel folder.

use std::io::Read;

use camino::{Utf8Component, Utf8Path, Utf8PathBuf};

use crate::error::{Error, Result};

/// How much of a refused line the error shows.
const ECHO_LIMIT: usize = 200;
/// Nesting of `-r`/`-c` files; real projects use two or three.
const MAX_DEPTH: usize = 8;
/// Size of each included file (the core also limits the top one).
const MAX_FILE_BYTES: u64 = 1024 * 1024;
/// Files included in all, counting repeats.
const MAX_FILES: usize = 64;

/// Options that take no part in where packages come from; those that take
/// a value are listed with `true`.
const HARMLESS_OPTIONS: [(&str, bool); 6] = [
    ("--no-index", false),
    ("--pre", false),
    ("--prefer-binary", false),
    ("--require-hashes", false),
    ("--only-binary", true),
    ("--no-binary", true),
];

/// Options that name another package source: refused.
const SOURCE_OPTIONS: [&str; 7] = [
    "-i",
    "--index-url",
    "--extra-index-url",
    "-f",
    "--find-links",
    "--trusted-host",
    "--index",
];

/// One file read and checked, for the key.
pub(crate) struct RequirementsFile {
    /// Its path relative to the app folder, as written in messages.
    pub name: Utf8PathBuf,
    pub bytes: Vec<u8>,
}

/// Reads `requirements` and every file it includes (depth first, in the
/// order the installer reads them), refusing anything that would make the
/// installer read outside the requirements file's folder or the wheel
/// folder. The first entry is `requirements` itself.
pub(crate) fn read_checked(requirements: &Utf8Path) -> Result<Vec<RequirementsFile>> {
    let root_given = match requirements.parent() {
        Some(parent) if !parent.as_str().is_empty() => parent,
        _ => Utf8Path::new("."),
    };
    let root = canonical(root_given).map_err(|source| Error::Requirements {
        path: requirements.to_owned(),
        source,
    })?;
    let Some(top) = requirements.file_name() else {
        return Err(Error::RequirementsFile {
            path: requirements.to_owned(),
            problem: "is not a file name".to_owned(),
        });
    };
    let mut reader = Reader {
        root,
        files: Vec::new(),
        stack: Vec::new(),
    };
    // A missing or unreadable file is reported as such, not as a refusal.
    std::fs::metadata(requirements).map_err(|source| Error::Requirements {
        path: requirements.to_owned(),
        source,
    })?;
    let top = Utf8PathBuf::from(top);
    let resolved = reader
        .resolve(&top)
        .map_err(|problem| Error::RequirementsFile {
            path: requirements.to_owned(),
            problem,
        })?;
    reader.read_file(top, resolved)?;
    Ok(reader.files)
}

struct Reader {
    /// The app folder, canonical.
    root: Utf8PathBuf,
    files: Vec<RequirementsFile>,
    /// Canonical paths of the files being read, to refuse a cycle.
    stack: Vec<Utf8PathBuf>,
}

impl Reader {
    /// `name` (relative to the app folder, already lexically inside it)
    /// followed through links, or why it cannot be included.
    fn resolve(&self, name: &Utf8Path) -> std::result::Result<Utf8PathBuf, String> {
        let path = self.root.join(name);
        let resolved = canonical(&path).map_err(|err| match err.kind() {
            std::io::ErrorKind::NotFound => "does not exist".to_owned(),
            _ => format!("cannot be opened ({err})"),
        })?;
        if !resolved.starts_with(&self.root) {
            return Err("is a link to a file outside the app folder".to_owned());
        }
        Ok(resolved)
    }

    fn read_file(&mut self, name: Utf8PathBuf, resolved: Utf8PathBuf) -> Result<()> {
        let unreadable = |source| Error::Requirements {
            path: resolved.clone(),
            source,
        };
        let file = std::fs::File::open(&resolved).map_err(unreadable)?;
        let meta = file.metadata().map_err(unreadable)?;
        if !meta.is_file() {
            return Err(Error::RequirementsFile {
                path: name,
                problem: "is not a regular file".to_owned(),
            });
        }
        let mut bytes = Vec::new();
        file.take(MAX_FILE_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(unreadable)?;
        if bytes.len() as u64 > MAX_FILE_BYTES {
            return Err(Error::RequirementsFile {
                path: name,
                problem: format!("is larger than {MAX_FILE_BYTES} bytes"),
            });
        }
        let Ok(text) = String::from_utf8(bytes.clone()) else {
            return Err(Error::RequirementsFile {
                path: name,
                problem: "is not UTF-8 text".to_owned(),
            });
        };
        self.files.push(RequirementsFile {
            name: name.clone(),
            bytes,
        });
        self.stack.push(resolved);
        for (number, line) in logical_lines(&text) {
            let refuse = |problem: String| Error::RequirementsLine {
                file: name.clone(),
                line: number,
                problem,
                text: echo(&line),
            };
            if let Some(include) = check_line(&line).map_err(refuse)? {
                let (included, resolved) = self.locate(&name, &include).map_err(refuse)?;
                // An error inside the included file names that file and
                // line; this line only led there.
                self.read_file(included, resolved)?;
            }
        }
        self.stack.pop();
        Ok(())
    }

    /// The file that `from` includes as `include` (relative to `from`'s
    /// folder, as the installers resolve it): its name relative to the app
    /// folder and its resolved path, or why it may not be included.
    fn locate(
        &self,
        from: &Utf8Path,
        include: &str,
    ) -> std::result::Result<(Utf8PathBuf, Utf8PathBuf), String> {
        let name = inside_app(from, include)?;
        let resolved = self
            .resolve(&name)
            .map_err(|problem| format!("includes {name}, which {problem}"))?;
        if !std::fs::metadata(&resolved).is_ok_and(|meta| meta.is_file()) {
            return Err(format!("includes {name}, which is not a regular file"));
        }
        if self.stack.contains(&resolved) {
            return Err(format!("includes {name}, which includes this line again"));
        }
        if self.stack.len() >= MAX_DEPTH {
            return Err(format!("includes files nested more than {MAX_DEPTH} deep"));
        }
        if self.files.len() >= MAX_FILES {
            return Err(format!("includes more than {MAX_FILES} files in all"));
        }
        Ok((name, resolved))
    }
}

/// The lines as the installers see them: `\` at the end of a line joins
/// the next one, and `#` at the start or after a space starts a comment.
/// Each comes with the number of its first physical line; blank ones are
/// left out.
fn logical_lines(text: &str) -> Vec<(usize, String)> {
    let mut lines = Vec::new();
    let mut pending: Option<(usize, String)> = None;
    for (index, physical) in text.lines().enumerate() {
        let (start, mut joined) = pending.take().unwrap_or((index + 1, String::new()));
        joined.push_str(physical);
        if let Some(stripped) = joined.strip_suffix('\\') {
            pending = Some((start, stripped.to_owned()));
            continue;
        }
        lines.push((start, joined));
    }
    lines.extend(pending);
    lines
        .into_iter()
        .map(|(number, line)| (number, strip_comment(&line).trim().to_owned()))
        .filter(|(_, line)| !line.is_empty())
        .collect()
}

fn strip_comment(line: &str) -> &str {
    let mut previous_blank = true;
    for (at, c) in line.char_indices() {
        if c == '#' && previous_blank {
            return &line[..at];
        }
        previous_blank = c.is_whitespace();
    }
    line
}

/// Checks one logical line; returns the file it includes, if any.
fn check_line(line: &str) -> std::result::Result<Option<String>, String> {
    // Both installers expand `${NAME}` from their environment, so what the
    // line names is not what it says.
    if line.contains("${") {
        return Err("environment variables (${...}) are not allowed".to_owned());
    }
    if line.starts_with('-') {
        return check_option(line);
    }
    check_requirement(line).map(|()| None)
}

/// An option line: `--name=value`, `--name value`, `-x value` or `-xvalue`,
/// one option per line.
fn check_option(line: &str) -> std::result::Result<Option<String>, String> {
    let mut words = line.split_whitespace();
    let first = words.next().unwrap_or_default();
    // A short option's value may follow it directly: `-rbase.txt`.
    let short_end = first.char_indices().nth(2).map(|(at, _)| at);
    let (option, mut value) = match (first.split_once('='), short_end) {
        (Some((option, value)), _) if option.starts_with("--") => (option, Some(value.to_owned())),
        (_, Some(at)) if !first.starts_with("--") => (&first[..at], Some(first[at..].to_owned())),
        _ => (first, None),
    };
    let takes_value = match option {
        "-r" | "--requirement" | "-c" | "--constraint" => true,
        "-e" | "--editable" => {
            return Err(format!(
                "{option} is refused: an editable install runs code from a folder \
                 outside the shared virtualenv; put a wheel in the wheel folder instead"
            ))
        }
        _ if SOURCE_OPTIONS.contains(&option) => {
            return Err(format!(
                "{option} is refused: packages install offline from the wheel folder only"
            ))
        }
        _ => match HARMLESS_OPTIONS.iter().find(|(name, _)| *name == option) {
            Some((_, takes_value)) => *takes_value,
            None => return Err(format!("{option} is not an option sarge allows here")),
        },
    };
    if takes_value && value.is_none() {
        value = words.next().map(str::to_owned);
    }
    if words.next().is_some() || (!takes_value && value.is_some()) {
        return Err(format!("{option}: one option and its value per line"));
    }
    if !takes_value {
        return Ok(None);
    }
    let Some(value) = value.filter(|value| !value.is_empty()) else {
        return Err(format!("{option} needs a value"));
    };
    match option {
        "-r" | "--requirement" | "-c" | "--constraint" => Ok(Some(value)),
        _ => Ok(None),
    }
}

/// A requirement: a name with extras, versions and markers, optionally
/// followed by `--hash` options. Never a path or a URL.
fn check_requirement(line: &str) -> std::result::Result<(), String> {
    let specifier = line.split(';').next().unwrap_or_default();
    if specifier.contains("://") || specifier.contains('@') {
        return Err(
            "a direct reference (URL or `name @ ...`) is refused: packages install \
             offline from the wheel folder only"
                .to_owned(),
        );
    }
    let mut words = specifier.split_whitespace();
    let first = words.next().unwrap_or_default();
    let is_path = first.contains('/')
        || first.starts_with('.')
        || first.starts_with('~')
        || [".whl", ".zip", ".tar.gz", ".tgz"]
            .iter()
            .any(|suffix| first.to_ascii_lowercase().ends_with(suffix));
    if is_path {
        return Err(
            "a path requirement is refused: the shared virtualenv installs packages by \
             name from the wheel folder; put the wheel there"
                .to_owned(),
        );
    }
    for word in words.filter(|word| word.starts_with('-')) {
        let option = word.split_once('=').map_or(word, |(option, _)| option);
        if option != "--hash" {
            return Err(format!("{option} is not an option sarge allows here"));
        }
    }
    Ok(())
}

/// `include`, written in `from` (a path relative to the app folder),
/// as a path relative to the app folder, if it stays inside it.
fn inside_app(from: &Utf8Path, include: &str) -> std::result::Result<Utf8PathBuf, String> {
    if include.contains("://") || include.starts_with("file:") {
        return Err("including a URL is refused: only files inside the app folder".to_owned());
    }
    if include.contains(['"', '\'', '\\']) {
        return Err("an included path with quotes or backslashes is refused".to_owned());
    }
    let written = Utf8Path::new(include);
    if written.is_absolute() || include.starts_with('~') {
        return Err(
            "including a file by absolute path is refused: only files inside the app folder"
                .to_owned(),
        );
    }
    let mut parts: Vec<&str> = from
        .parent()
        .map(|dir| dir.iter().collect())
        .unwrap_or_default();
    for component in written.components() {
        match component {
            Utf8Component::Normal(part) => parts.push(part),
            Utf8Component::CurDir => {}
            Utf8Component::ParentDir => {
                if parts.pop().is_none() {
                    return Err(
                        "including a file outside the app folder (`..`) is refused".to_owned()
                    );
                }
            }
            Utf8Component::RootDir | Utf8Component::Prefix(_) => {
                return Err("including a file by absolute path is refused".to_owned())
            }
        }
    }
    if parts.is_empty() {
        return Err("includes the app folder itself".to_owned());
    }
    Ok(parts.iter().collect())
}

/// The line as the error shows it: at most [`ECHO_LIMIT`] characters.
fn echo(line: &str) -> String {
    match line.char_indices().nth(ECHO_LIMIT) {
        Some((at, _)) => format!("{}...", &line[..at]),
        None => line.to_owned(),
    }
}

fn canonical(path: &Utf8Path) -> std::io::Result<Utf8PathBuf> {
    let resolved = std::fs::canonicalize(path)?;
    Utf8PathBuf::from_path_buf(resolved).map_err(|path| {
        std::io::Error::other(format!(
            "resolves to a path that is not UTF-8: {}",
            path.display()
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// An app folder inside a temp folder, with a secret file beside it
    /// that no check may ever read or echo.
    struct App {
        outer: Utf8PathBuf,
        dir: Utf8PathBuf,
    }

    const SECRET: &str = "root:x:0:0:secret-line";

    impl App {
        fn new(requirements: &str) -> App {
            static COUNTER: AtomicUsize = AtomicUsize::new(0);
            let outer = Utf8PathBuf::try_from(std::env::temp_dir().join(format!(
                "sarge-venv-requirements-{}-{}",
                std::process::id(),
                COUNTER.fetch_add(1, Ordering::SeqCst)
            )))
            .unwrap();
            let dir = outer.join("app");
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(outer.join("secret.txt"), format!("{SECRET}\n")).unwrap();
            std::fs::write(dir.join("requirements.txt"), requirements).unwrap();
            App { outer, dir }
        }

        fn write(&self, name: &str, text: &str) {
            let path = self.dir.join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }

        fn check(&self) -> Result<Vec<RequirementsFile>> {
            read_checked(&self.dir.join("requirements.txt"))
        }

        /// The refusal's message, which must never show the secret.
        fn refusal(&self) -> String {
            let message = match self.check() {
                Ok(_) => panic!("accepted"),
                Err(err) => err.to_string(),
            };
            assert!(!message.contains("secret-line"), "{message}");
            message
        }
    }

    impl Drop for App {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.outer);
        }
    }

    #[test]
    fn names_versions_markers_hashes_and_harmless_options_are_accepted() {
        let app = App::new(
            "# pinned\nFlask==3.1.3  # web\nJinja2[i18n]>=3.1,<4 ; python_version >= \"3.9\"\n\
             MarkupSafe==3.0.4 \\\n    --hash=sha256:abc\n--only-binary :all:\n--no-index\n\
             -r reqs/base.txt\n--constraint=constraints.txt\n",
        );
        app.write("reqs/base.txt", "click==8.5.1\n-r ../common.txt\n");
        app.write("common.txt", "blinker\n");
        app.write("constraints.txt", "Werkzeug<4\n");
        let files = app.check().unwrap();
        let names: Vec<&str> = files.iter().map(|file| file.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "requirements.txt",
                "reqs/base.txt",
                "common.txt",
                "constraints.txt"
            ]
        );
    }

    #[test]
    fn an_absolute_include_is_refused_naming_file_line_and_option_without_reading_it() {
        let app = App::new("Flask\n-r /etc/passwd\n");
        assert_eq!(
            app.refusal(),
            "requirements.txt line 2, `-r /etc/passwd`: including a file by absolute path \
             is refused: only files inside the app folder"
        );
        let app = App::new(&format!("-c{}/secret.txt\n", "/tmp/../tmp"));
        assert!(app
            .refusal()
            .starts_with("requirements.txt line 1, `-c/tmp"));
    }

    #[test]
    fn includes_that_leave_the_app_folder_are_refused() {
        for (line, expected) in [
            ("-r ../secret.txt", "outside the app folder (`..`)"),
            (
                "--requirement=sub/../../secret.txt",
                "outside the app folder (`..`)",
            ),
            ("-r ~/secret.txt", "absolute path"),
            ("-r file:///etc/passwd", "including a URL"),
            ("-r https://example.com/r.txt", "including a URL"),
            ("-r \"/etc/passwd\"", "quotes"),
            ("-r ${HOME}/x.txt", "environment variables"),
            (
                "-r missing.txt",
                "includes missing.txt, which does not exist",
            ),
            ("-r .", "includes the app folder itself"),
            ("-r sub", "includes sub, which is not a regular file"),
            ("-r", "-r needs a value"),
        ] {
            let app = App::new(&format!("{line}\n"));
            std::fs::create_dir(app.dir.join("sub")).unwrap();
            let message = app.refusal();
            assert!(message.contains(expected), "{line}: {message}");
            assert!(
                message.starts_with("requirements.txt line 1, "),
                "{line}: {message}"
            );
        }
    }

    #[test]
    fn an_included_link_out_of_the_app_is_refused_unread() {
        let app = App::new("-r base.txt\n");
        std::os::unix::fs::symlink(app.outer.join("secret.txt"), app.dir.join("base.txt")).unwrap();
        assert_eq!(
            app.refusal(),
            "requirements.txt line 1, `-r base.txt`: includes base.txt, which is a link to \
             a file outside the app folder"
        );
    }

    #[test]
    fn a_requirements_file_that_is_a_link_out_of_the_app_is_refused_unread() {
        let app = App::new("");
        std::fs::remove_file(app.dir.join("requirements.txt")).unwrap();
        std::os::unix::fs::symlink(
            app.outer.join("secret.txt"),
            app.dir.join("requirements.txt"),
        )
        .unwrap();
        assert!(app
            .refusal()
            .ends_with("requirements.txt is a link to a file outside the app folder"));
    }

    #[test]
    fn package_sources_editables_paths_and_urls_are_refused() {
        for (line, expected) in [
            ("-i https://pypi.org/simple", "-i is refused"),
            (
                "--index-url=https://pypi.org/simple",
                "--index-url is refused",
            ),
            (
                "--extra-index-url https://x",
                "--extra-index-url is refused",
            ),
            ("-f /srv/wheels", "-f is refused"),
            ("-f/srv/wheels", "-f is refused"),
            ("--find-links=/srv/wheels", "--find-links is refused"),
            ("--trusted-host example.com", "--trusted-host is refused"),
            ("-e /srv/src/pkg", "-e is refused"),
            ("--editable=.", "--editable is refused"),
            ("-e.", "-e is refused"),
            ("pkg @ https://example.com/pkg.whl", "direct reference"),
            ("pkg@file:///srv/pkg.whl", "direct reference"),
            ("https://example.com/pkg-1.0.tar.gz", "direct reference"),
            ("git+https://example.com/pkg.git", "direct reference"),
            ("/srv/wheels/pkg-1.0-py3-none-any.whl", "path requirement"),
            ("./vendor/pkg-1.0-py3-none-any.whl", "path requirement"),
            ("pkg-1.0-py3-none-any.whl", "path requirement"),
            (".", "path requirement"),
            ("--global-option=x", "not an option sarge allows"),
            ("pkg --config-settings=x", "not an option sarge allows"),
            ("--pre -r other.txt", "one option and its value per line"),
        ] {
            let app = App::new(&format!("Flask\n{line}\n"));
            let message = app.refusal();
            assert!(
                message.starts_with(&format!("requirements.txt line 2, `{line}`: ")),
                "{line}: {message}"
            );
            assert!(message.contains(expected), "{line}: {message}");
        }
    }

    #[test]
    fn a_refusal_in_an_included_file_names_that_file_and_line() {
        let app = App::new("Flask\n-r reqs/base.txt\n");
        app.write(
            "reqs/base.txt",
            "click\n\n# a comment\nx \\\n  @ https://e.com/x\n",
        );
        assert!(app
            .refusal()
            .starts_with("reqs/base.txt line 4, `x   @ https://e.com/x`: a direct reference"));
    }

    #[test]
    fn a_cycle_of_includes_is_refused() {
        let app = App::new("-r a.txt\n");
        app.write("a.txt", "-r requirements.txt\n");
        assert_eq!(
            app.refusal(),
            "a.txt line 1, `-r requirements.txt`: includes requirements.txt, which includes \
             this line again"
        );
    }

    #[test]
    fn a_long_line_is_echoed_cut_to_200_characters() {
        let long = format!("--index-url=https://{}", "x".repeat(500));
        let app = App::new(&format!("{long}\n"));
        let message = app.refusal();
        let echoed = message.split('`').nth(1).unwrap();
        assert_eq!(echoed, format!("{}...", &long[..200]));
    }

    #[test]
    fn a_hash_comment_needs_a_space_before_it() {
        let app = App::new("pkg#egg\n");
        // Not a comment: the whole word is the requirement, which pip
        // would refuse as well; sarge passes it on to the installer.
        assert!(app.check().is_ok());
    }

    #[test]
    fn checking_flasks_requirements_takes_microseconds() {
        let app = App::new(&"Flask==3.1.3\nJinja2==3.1.6\nMarkupSafe==3.0.4\n".repeat(10));
        let started = std::time::Instant::now();
        for _ in 0..100 {
            app.check().unwrap();
        }
        let each = started.elapsed() / 100;
        eprintln!("one check of 30 lines: {each:?}");
        assert!(each < std::time::Duration::from_millis(5), "{each:?}");
    }
}

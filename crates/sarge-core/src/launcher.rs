//! The per-instance launcher script. supervisord runs it to start the
//! process, and `sarge run` runs it to open a shell in the same world.
//!
//! The app's env never travels through supervisord's config parser, which
//! mangles `%`, quotes, `;` and `#`: it is written, single-quoted, to
//! `env.sh` (mode 0600) and sourced by the launcher, so every value reaches
//! the app byte for byte.

use std::collections::BTreeMap;

use camino::{Utf8Path, Utf8PathBuf};

use crate::error::Result;
use crate::state::write_atomic;

/// The launcher of the instance in `instance_dir`.
pub(crate) fn launcher_path(instance_dir: &Utf8Path) -> Utf8PathBuf {
    instance_dir.join("run")
}

/// Writes `env.sh` (0600) and the launcher `run` (0700) into `instance_dir`.
pub(crate) fn write_launcher(
    instance_dir: &Utf8Path,
    app_dir: &Utf8Path,
    env: &BTreeMap<String, String>,
    venv_bin: Option<&Utf8Path>,
    command: &str,
) -> Result<()> {
    let env_file = instance_dir.join("env.sh");
    write_atomic(&env_file, render_env(env).as_bytes(), 0o600)?;
    let mut script = String::from(
        "#!/bin/sh\n\
         # Written by sarge. Without arguments runs the Procfile command;\n\
         # with arguments runs them, in the instance's environment.\n\
         set -a\n",
    );
    script.push_str(&format!(". {}\n", shell_quote(env_file.as_str())));
    script.push_str("set +a\n");
    if let Some(bin) = venv_bin {
        let venv = bin.parent().unwrap_or(bin);
        script.push_str(&format!(
            "VIRTUAL_ENV={}\nPATH={}:\"$PATH\"\nexport VIRTUAL_ENV PATH\n",
            shell_quote(venv.as_str()),
            shell_quote(bin.as_str())
        ));
    }
    script.push_str(&format!("cd {} || exit 1\n", shell_quote(app_dir.as_str())));
    if is_plain_command(command) {
        // Read the same by sh as by bash: the launcher's own shell runs it,
        // and bash's start-up (2 ms or more) is off the deploy's path.
        script.push_str(&format!("if [ \"$#\" -eq 0 ]; then exec {command}; fi\n"));
    } else {
        script.push_str(&format!(
            "if [ \"$#\" -eq 0 ]; then set -- bash -c {}; fi\n",
            shell_quote(command)
        ));
    }
    script.push_str("exec \"$@\"\n");
    write_atomic(&launcher_path(instance_dir), script.as_bytes(), 0o700)
}

/// Whether `command` is words of plain characters and `$NAME` or
/// `${NAME}` expansions only, like `gunicorn app:app --bind 0.0.0.0:$PORT`:
/// then any POSIX shell reads it as bash does (Procfile commands are bash's,
/// as on Heroku). Quotes, globs, operators, `~`, `\\` and every other
/// expansion are left to bash.
fn is_plain_command(command: &str) -> bool {
    let plain = |c: char| c.is_ascii_alphanumeric() || "_./:=@%+,-".contains(c);
    let name = |text: &str| {
        text.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            && text.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    };
    let mut words = command
        .split(' ')
        .filter(|word| !word.is_empty())
        .peekable();
    // The launcher runs it as `exec COMMAND`: the first word must be a
    // program, not an assignment or something the shell itself runs.
    match words.peek() {
        Some(first) if !first.contains('=') && !SHELL_WORDS.contains(first) => {}
        _ => return false,
    }
    if command.contains(['\t', '\n']) {
        return false;
    }
    words.all(|word| {
        let mut rest = word;
        while !rest.is_empty() {
            if let Some(after) = rest.strip_prefix("${") {
                let Some((inside, tail)) = after.split_once('}') else {
                    return false;
                };
                if !name(inside) {
                    return false;
                }
                rest = tail;
            } else if let Some(after) = rest.strip_prefix('$') {
                let end = after
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(after.len());
                if !name(&after[..end]) {
                    return false;
                }
                rest = &after[end..];
            } else {
                let end = rest.find(|c: char| !plain(c)).unwrap_or(rest.len());
                if end == 0 {
                    return false;
                }
                rest = &rest[end..];
            }
        }
        true
    })
}

/// Keywords and builtins of sh and bash: a command starting with one is
/// not run as `exec COMMAND`.
const SHELL_WORDS: &[&str] = &[
    ".", ":", "[", "alias", "bg", "break", "builtin", "case", "cd", "command", "continue",
    "declare", "do", "done", "echo", "elif", "else", "enable", "esac", "eval", "exec", "exit",
    "export", "false", "fc", "fg", "fi", "for", "function", "getopts", "hash", "if", "in", "jobs",
    "kill", "let", "local", "printf", "pwd", "read", "readonly", "return", "select", "set",
    "shift", "source", "test", "then", "time", "times", "trap", "true", "type", "typeset",
    "ulimit", "umask", "unalias", "unset", "until", "wait", "while",
];

/// `NAME='value'` lines that a POSIX shell reads back to the exact bytes.
fn render_env(env: &BTreeMap<String, String>) -> String {
    env.iter()
        .map(|(name, value)| format!("{name}={}\n", shell_quote(value)))
        .collect()
}

/// Single-quotes `value` for a POSIX shell: inside single quotes every byte
/// is literal except `'`, which is closed, escaped and reopened.
pub(crate) fn shell_quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_commands_sh_reads_as_bash_does_skip_bash() {
        for plain in [
            "python app.py $PORT",
            "gunicorn app:app --bind 0.0.0.0:$PORT --workers 3",
            "uvicorn main:app --port=${PORT} --log-level=info",
            "bin/worker -c 50%",
        ] {
            assert!(is_plain_command(plain), "{plain}");
        }
        for for_bash in [
            "",
            "   ",
            "python app.py $PORT && echo done",
            "python app.py \"$PORT\"",
            "echo $'a'",
            "echo {a,b}",
            "ls *.py",
            "cd ~ ; python app.py",
            "python app.py $(cat port)",
            "python app.py ${PORT:-5000}",
            "python app.py $1",
            "python app.py $",
            "python\tapp.py",
            "FOO=1 python app.py > log",
            "python app.py \\$PORT",
            "FOO=1 python app.py",
            "exec gunicorn app:app",
            "echo $PORT",
            "cd src",
        ] {
            assert!(!is_plain_command(for_bash), "{for_bash}");
        }
    }

    #[test]
    fn a_plain_command_runs_in_the_launchers_shell_with_its_words_expanded() {
        let dir = std::env::temp_dir().join(format!("sarge-launcher-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let dir = camino::Utf8PathBuf::from_path_buf(dir).unwrap();
        let env = BTreeMap::from([("PORT".to_owned(), "8123".to_owned())]);
        for command in [
            "/usr/bin/printf %s:%s:%s ${PORT} $PORT x$PORT",
            "printf %s:%s:%s \"$PORT\" $PORT x",
        ] {
            write_launcher(&dir, &dir, &env, None, command).unwrap();
            let output = std::process::Command::new(launcher_path(&dir))
                .output()
                .unwrap();
            assert!(output.status.success(), "{command}");
            let expected = if is_plain_command(command) {
                "8123:8123:x8123"
            } else {
                "8123:8123:x"
            };
            assert_eq!(
                String::from_utf8_lossy(&output.stdout),
                expected,
                "{command}"
            );
        }
        let script = std::fs::read_to_string(launcher_path(&dir)).unwrap();
        assert!(script.contains("bash -c"), "quotes go to bash: {script}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn env_survives_a_shell_byte_for_byte() {
        let tricky = "p%40ss;word # not a comment 'quoted' \"double\" $HOME `id` \\n\nline2";
        let env = BTreeMap::from([("SECRET".to_owned(), tricky.to_owned())]);
        let output = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("{}printf %s \"$SECRET\"", render_env(&env)))
            .output()
            .unwrap();
        assert_eq!(String::from_utf8(output.stdout).unwrap(), tricky);
    }

    #[test]
    fn quotes_single_quotes() {
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
    }
}

//! Reaching a server over the system `ssh`: the [`Target`] a command
//! names (`[user@]host:SARGE_HOME`) and the [`SshCommand`] that reaches it
//! (`ssh`, or the words of `SARGE_SSH`, like `GIT_SSH_COMMAND`), shared by
//! `sarge push` and `sarge setup`. There is no ssh library: the user's
//! `~/.ssh/config`, agent and jump hosts apply as they do for `ssh`.

use std::fmt;
use std::process::Command;
use std::str::FromStr;

use camino::Utf8PathBuf;

use crate::error::{excerpt, Error, Result};

/// A sarge home on a server, as `sarge push` and `sarge setup` take it:
/// `[user@]host:SARGE_HOME`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Target {
    /// What ssh connects to: `host` or `user@host` (or a `~/.ssh/config`
    /// alias).
    pub destination: String,
    /// The sarge home on that server.
    pub home: Utf8PathBuf,
}

impl FromStr for Target {
    type Err = Error;

    /// Parses `[user@]host:SARGE_HOME`.
    fn from_str(text: &str) -> Result<Self> {
        let bad = |problem: &str| Error::BadTarget {
            target: excerpt(text),
            problem: problem.to_owned(),
        };
        let Some((destination, home)) = text.split_once(':') else {
            return Err(bad("is not [user@]host:SARGE_HOME"));
        };
        if destination.is_empty() || destination.ends_with('@') {
            return Err(bad("has no host before the `:`"));
        }
        if destination.starts_with('-') || destination.chars().any(char::is_whitespace) {
            return Err(bad("has a host that ssh would not take as one"));
        }
        if home.is_empty() {
            return Err(bad("has no SARGE_HOME path after the `:`"));
        }
        if home.chars().any(char::is_control) {
            return Err(bad("has a control character in its path"));
        }
        Ok(Self {
            destination: destination.to_owned(),
            home: home.into(),
        })
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.destination, self.home)
    }
}

/// The ssh command line sarge runs to reach a [`Target`]: `ssh`, or the
/// words of `SARGE_SSH`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshCommand {
    /// The program.
    pub program: String,
    /// Its options, before the destination.
    pub args: Vec<String>,
}

impl Default for SshCommand {
    fn default() -> Self {
        Self {
            program: "ssh".to_owned(),
            args: Vec::new(),
        }
    }
}

impl SshCommand {
    /// `SARGE_SSH` split into words if set, else plain `ssh`.
    pub fn from_env() -> Result<Self> {
        match std::env::var("SARGE_SSH") {
            Ok(value) => Self::parse(&value),
            Err(_) => Ok(Self::default()),
        }
    }

    /// The command that runs `script` in the login shell of `target`'s
    /// user (ssh hands it to that shell as one string).
    pub(crate) fn remote(&self, target: &Target, script: &str) -> Command {
        let mut command = Command::new(&self.program);
        command
            .args(&self.args)
            .arg("--")
            .arg(&target.destination)
            .arg(script);
        command
    }

    /// The words of `value`, split as a shell splits simple words
    /// (whitespace, `'...'`, `"..."`, `\`), the first being the program.
    pub fn parse(value: &str) -> Result<Self> {
        let mut words = split_words(value).into_iter();
        let Some(program) = words.next() else {
            return Err(Error::BadSshCommand {
                value: excerpt(value),
            });
        };
        Ok(Self {
            program,
            args: words.collect(),
        })
    }
}

fn split_words(text: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if let Some(done) = word.take() {
                    words.push(done);
                }
            }
            '\'' => {
                let current = word.get_or_insert_with(String::new);
                for c in chars.by_ref() {
                    if c == '\'' {
                        break;
                    }
                    current.push(c);
                }
            }
            '"' => {
                let current = word.get_or_insert_with(String::new);
                while let Some(c) = chars.next() {
                    match c {
                        '"' => break,
                        '\\' => current.extend(chars.next()),
                        c => current.push(c),
                    }
                }
            }
            '\\' => word.get_or_insert_with(String::new).extend(chars.next()),
            c => word.get_or_insert_with(String::new).push(c),
        }
    }
    words.extend(word);
    words
}

/// `word` quoted for the remote shell ssh hands the command to.
pub(crate) fn shell_quote(word: &str) -> String {
    if !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:@%+,".contains(c))
    {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// The error for ssh itself failing to reach `target` (exit status 255),
/// from what it printed on `stderr`.
pub(crate) fn ssh_failed(target: &Target, stderr: &str) -> Error {
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    Error::Ssh {
        target: target.to_string(),
        message: if lines.is_empty() {
            "ssh exited with status 255".to_owned()
        } else {
            lines
                .iter()
                .map(|l| excerpt(l.trim()))
                .collect::<Vec<_>>()
                .join("; ")
        },
    }
}

/// The error for an ssh command that could not be started (a wrong
/// `SARGE_SSH`), naming the target like ssh's own failures.
pub(crate) fn cannot_run_ssh(target: &Target, ssh: &SshCommand, source: &std::io::Error) -> Error {
    Error::Ssh {
        target: target.to_string(),
        message: format!("cannot run {}: {source}", ssh.program),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_target_is_user_host_and_home() {
        let target: Target = "deploy@web1:/var/local/app".parse().unwrap();
        assert_eq!(target.destination, "deploy@web1");
        assert_eq!(target.home, "/var/local/app");
        assert_eq!(target.to_string(), "deploy@web1:/var/local/app");
        for (bad, problem) in [
            ("web1", "is not [user@]host:SARGE_HOME"),
            (":/srv", "has no host"),
            ("me@:/srv", "has no host"),
            ("web1:", "has no SARGE_HOME"),
            ("-oProxyCommand=x:/srv", "would not take"),
        ] {
            let error = bad.parse::<Target>().unwrap_err().to_string();
            assert!(error.contains(problem), "{bad}: {error}");
        }
    }

    #[test]
    fn sarge_ssh_splits_like_a_shell() {
        let ssh = SshCommand::parse("ssh -p 2222 -i '/keys/my key' -o \"A=b c\" x\\ y").unwrap();
        assert_eq!(ssh.program, "ssh");
        assert_eq!(
            ssh.args,
            ["-p", "2222", "-i", "/keys/my key", "-o", "A=b c", "x y"]
        );
        assert!(SshCommand::parse("  ").is_err());
    }

    #[test]
    fn remote_words_are_quoted_for_the_shell() {
        assert_eq!(
            shell_quote("/var/local/app/bin/sarge"),
            "/var/local/app/bin/sarge"
        );
        assert_eq!(shell_quote("it's $HOME"), r"'it'\''s $HOME'");
        assert_eq!(shell_quote(""), "''");
    }

    #[test]
    fn the_remote_command_puts_the_script_after_the_destination() {
        let ssh = SshCommand::parse("ssh -p 2222").unwrap();
        let target: Target = "deploy@web1:/srv/app".parse().unwrap();
        let command = ssh.remote(&target, "echo hi");
        let args: Vec<_> = command.get_args().collect();
        assert_eq!(command.get_program(), "ssh");
        assert_eq!(args, ["-p", "2222", "--", "deploy@web1", "echo hi"]);
    }
}

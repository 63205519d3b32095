//! `ringkv user`: password hashes for the users file (see SECURITY.md).

use std::io::BufRead;

use anyhow::{Context, bail};
use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Print the argon2id hash of a password read from standard input (its
    /// first line) or from RINGKV_PASSWORD, for a users file's
    /// `password_hash`. Never pass a password as an argument.
    Hash,
}

pub fn run(cmd: UserCommand) -> anyhow::Result<()> {
    match cmd {
        UserCommand::Hash => {
            let password = match std::env::var("RINGKV_PASSWORD") {
                Ok(p) => p,
                Err(_) => {
                    let mut line = String::new();
                    std::io::stdin()
                        .lock()
                        .read_line(&mut line)
                        .context("reading the password from standard input")?;
                    line.trim_end_matches(['\r', '\n']).to_string()
                }
            };
            if password.is_empty() {
                bail!("empty password");
            }
            println!("{}", ringkv_auth::hash_password(password.as_bytes())?);
            Ok(())
        }
    }
}

//! The secrets a config names: private key, PSK and token files, each refused when others can
//! read it.

use std::path::Path;

use super::locate::Document;
use super::rules::{KEY_RULE, Problem, TOKEN_RULE, problem};
use super::{MAX_TOKEN_LEN, MIN_TOKEN_LEN};
use crate::keys::{KeyError, PrivateKey, Psk};

/// Reads an access token: one line, refused if others can read the file (like a key).
pub(super) fn read_token(path: &Path) -> Result<String, Problem> {
    use std::os::unix::fs::PermissionsExt;
    let key = "status.token_file";
    let shown = path.display();
    let bad = |why: String| problem(key, format!("{why}; expected {TOKEN_RULE}"));
    let mode = std::fs::metadata(path).map_err(|e| bad(format!("cannot read {shown}: {e}")))?.permissions().mode();
    if mode & 0o077 != 0 {
        return Err(problem(
            key,
            format!("{shown}: the token is readable by others (mode {:o}); run `chmod 600 {shown}`", mode & 0o777),
        ));
    }
    let text = std::fs::read_to_string(path).map_err(|e| bad(format!("cannot read {shown}: {e}")))?;
    let token = text.trim();
    if !(MIN_TOKEN_LEN..=MAX_TOKEN_LEN).contains(&token.len()) || !token.chars().all(|c| c.is_ascii_graphic()) {
        return Err(bad(format!("{shown} holds {} characters or some that are not printable", token.len())));
    }
    Ok(token.to_owned())
}

pub(super) fn read_private_key(doc: &Document, path: &Path) -> Result<PrivateKey, Problem> {
    PrivateKey::read_file(&doc.resolve(path)).map_err(|e| key_file_problem("private_key_file", "private key", e))
}

/// A PSK file is read as a private key is: one base64 line, refused if others can read it.
pub(super) fn read_psk(doc: &Document, key: &str, path: &Path) -> Result<Psk, Problem> {
    let private = PrivateKey::read_file(&doc.resolve(path)).map_err(|e| key_file_problem(key, "pre-shared key", e))?;
    Ok(Psk(*private.as_bytes()))
}

pub(super) fn key_file_problem(key: &str, what: &str, error: KeyError) -> Problem {
    let message = match error {
        KeyError::Io { path, error } => {
            format!("cannot read {path}: {error}; expected a {what} file (one base64 line, mode 0600, from `keygen`)")
        }
        KeyError::Permissions { path, mode } => {
            format!("{path}: {what} is readable by others (mode {mode:o}); run `chmod 600 {path}`")
        }
        KeyError::Format => format!("the file does not hold a {what}; expected {KEY_RULE}"),
    };
    problem(key, message)
}

/// Reads a password or similar secret: one line, refused if others can read the file.
pub(super) fn read_secret_file(path: &Path) -> Result<String, String> {
    use std::os::unix::fs::PermissionsExt;
    let shown = path.display();
    let mode = std::fs::metadata(path).map_err(|e| format!("cannot read {shown}: {e}"))?.permissions().mode();
    if mode & 0o077 != 0 {
        return Err(format!("{shown} is readable by others (mode {:o}); run `chmod 600 {shown}`", mode & 0o777));
    }
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {shown}: {e}"))?;
    let secret = text.trim();
    if secret.is_empty() || secret.len() > 1024 || secret.contains('\n') {
        return Err(format!("{shown} does not hold one line of 1 to 1024 characters"));
    }
    Ok(secret.to_owned())
}

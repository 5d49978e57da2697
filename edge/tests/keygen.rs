//! `braid-edge keygen` and `pubkey`, run as an operator would (the gateway's share the code).

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Command, Output};

fn braid_edge(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_braid-edge")).args(args).output().expect("braid-edge runs")
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("braid-edge-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

#[test]
fn keygen_writes_a_private_key_only_its_owner_can_read_and_prints_the_public_key() {
    let dir = scratch("keygen");
    let key = dir.join("edge.key");
    let out = braid_edge(&["keygen", "--out", key.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let public = String::from_utf8(out.stdout).unwrap();
    assert_eq!(public.trim().len(), 44, "a base64 X25519 key: {public:?}");
    assert_eq!(std::fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600);

    let again = braid_edge(&["pubkey", "--key", key.to_str().unwrap()]);
    assert_eq!(String::from_utf8(again.stdout).unwrap(), public, "pubkey prints the same key");

    let overwrite = braid_edge(&["keygen", "--out", key.to_str().unwrap()]);
    assert!(!overwrite.status.success(), "keygen never overwrites a key");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_private_key_others_can_read_is_refused_with_the_fix_in_the_message() {
    let dir = scratch("perms");
    let key = dir.join("edge.key");
    assert!(braid_edge(&["keygen", "--out", key.to_str().unwrap()]).status.success());
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = braid_edge(&["pubkey", "--key", key.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.starts_with("error: "), "{stderr}");
    assert!(stderr.contains("readable by others") && stderr.contains("chmod 600"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    std::fs::remove_dir_all(&dir).unwrap();
}

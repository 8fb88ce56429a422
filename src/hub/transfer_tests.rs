//! Unit tests of `hub/transfer.rs`.

use super::*;

#[test]
fn a_download_that_cannot_fit_is_refused_naming_need_and_free() {
    let dir = tempfile::tempdir().unwrap();
    assert!(check_space(dir.path(), 0, "f").is_ok());
    if crate::support::fs::free_bytes(dir.path()).is_some() {
        let e = check_space(dir.path(), u64::MAX, "big.bin").unwrap_err();
        let text = e.to_string();
        assert!(matches!(e, HubError::NoSpace { .. }), "{text}");
        assert!(text.contains("big.bin") && text.contains(&format!("{} bytes", u64::MAX)) && text.contains("free"), "{text}");
    }
}

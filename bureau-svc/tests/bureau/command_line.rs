//! The bureau-svc binary: `--help`, and `preflight` printing its checklist with exit status 1
//! when a check fails.

use std::process::Command;

use fiscalbill_common::db::test_support;

use crate::support::*;

fn bureau_svc() -> Command {
    Command::new(env!("CARGO_BIN_EXE_bureau-svc"))
}

#[test]
fn help_lists_the_commands_options_and_environment() {
    let output = bureau_svc().arg("--help").output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    let help = String::from_utf8(output.stderr).unwrap();
    for word in ["serve", "preflight", "--config", "BUREAU__SECTION__KEY", "RUST_LOG"] {
        assert!(help.contains(word), "{word}: {help}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preflight_prints_its_checklist_and_fails_on_a_failed_check() {
    let env = Env::start(test_support::sqlite()).await;
    let dir = std::env::temp_dir().join(format!("fiscalbill-preflight-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("bureau.toml");
    let database = test_support::sqlite().url;
    let (_, certificate, key) = bureau_svc::pdf::sign::BillSigner::generate_throwaway("沙箱市财政局").unwrap();
    let (certificate_file, key_file) = (dir.join("signing.pem"), dir.join("signing.key"));
    std::fs::write(&certificate_file, certificate).unwrap();
    std::fs::write(&key_file, key).unwrap();
    std::fs::write(
        &config,
        format!(
            "[database]\nurl = {database:?}\n[wechat]\nbase_url = {base:?}\n\
             [account]\nappid = {BUREAU:?}\nsecret = {{ env = \"PREFLIGHT_BUREAU_SECRET\" }}\nname = \"沙箱市财政局\"\n\
             callback_token = \"sandboxToken\"\nencoding_aes_key = \"abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG\"\n\
             [[units]]\nappid = {UNIT:?}\npayee = \"沙箱市人民医院\"\nlogo_file = {logo:?}\n\
             [signing]\ncertificate = {{ file = {certificate:?} }}\nkey = {{ file = {key:?} }}\n",
            base = env.sandbox.base_url(),
            logo = demo_logo_file().display().to_string(),
            certificate = certificate_file.display().to_string(),
            key = key_file.display().to_string(),
        ),
    )
    .unwrap();
    let run = || {
        let mut command = bureau_svc();
        command.args(["preflight", "--config"]).arg(&config).env("PREFLIGHT_BUREAU_SECRET", secret_of(BUREAU).expose());
        tokio::task::spawn_blocking(move || command.output().unwrap())
    };
    // A fresh bureau: everything works but the unit's template does not exist yet.
    let output = run().await.unwrap();
    let text = String::from_utf8(output.stdout).unwrap();
    assert_eq!(output.status.code(), Some(1), "{text}");
    assert!(text.contains(&format!("✓ access token of {BUREAU}")), "{text}");
    assert!(text.contains("✓ invoice permission and s_pappid"), "{text}");
    assert!(
        text.contains(&format!("✗ bill template of unit {UNIT}: not created yet\n    fix: call CreateCardTemplate")),
        "{text}"
    );
    assert!(text.contains("✓ bill signing: certificate SHA-256 "), "{text}");
    assert!(text.ends_with("1 of 8 checks failed\n"), "{text}");
    assert!(!text.contains(secret_of(BUREAU).expose()), "no secret in the output");
}

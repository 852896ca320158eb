//! collection-svc: built in its own issue; this binary only says so until then.

fn main() -> std::process::ExitCode {
    eprintln!("collection-svc is not built yet; run `cargo run` for the development stack.");
    std::process::ExitCode::FAILURE
}

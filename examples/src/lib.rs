//! Examples of the sarge crates used from Rust; see `deploy.rs` and
//! `render_haproxy.rs` beside this folder (`cargo run -p sarge-examples
//! --example deploy -- HOME TARBALL PROCESS`).

//! Renders a haproxy config with `sarge-haproxy` alone: two stable
//! addresses, one already routed to two instances, and checks it with the
//! real haproxy when one is installed.
//!
//! ```sh
//! cargo run -p sarge-examples --example render_haproxy [HAPROXY_BIN]
//! ```

use camino::Utf8PathBuf;
use sarge_haproxy::{check_config, HaproxyConfig, Route, Server};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let web = Route::new("web", "127.0.0.1:5000").with_servers([
        Server::new("web-3fa9c1", 5012),
        Server::new("web-77b0d2", 5013),
    ]);
    let api = Route::new("api", "*:5001");
    let config = HaproxyConfig {
        admin_socket: "/var/local/app/var/run/haproxy.sock".into(),
        routes: vec![web, api],
    };
    config.validate()?;
    print!("{}", config.render());

    if let Some(bin) = std::env::args().nth(1) {
        let path = Utf8PathBuf::from(format!(
            "{}/sarge-example-haproxy.cfg",
            std::env::temp_dir().display()
        ));
        config.write(&path)?;
        let checked = check_config(bin.as_str().into(), &path);
        std::fs::remove_file(&path)?;
        checked?;
        eprintln!("haproxy accepts it");
    }
    Ok(())
}

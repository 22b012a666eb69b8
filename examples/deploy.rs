//! Deploys a tarball through the `sarge-core` API, as the `sarge` CLI does,
//! printing each step as it finishes.
//!
//! ```sh
//! cargo run -p sarge-examples --example deploy -- $SARGE_HOME app.tar web
//! ```

use std::time::Duration;

use sarge_core::{Home, Progress, Sarge};

struct Print;

impl Progress for Print {
    fn step(&mut self, step: &str, detail: &str, elapsed: Duration) {
        println!(
            "{step:>10} {:>7.1} ms  {detail}",
            elapsed.as_secs_f64() * 1e3
        );
    }
    fn note(&mut self, message: &str) {
        println!("{message}");
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(home), Some(tarball), Some(process)) = (args.next(), args.next(), args.next()) else {
        return Err("usage: deploy SARGE_HOME TARBALL PROCESS".into());
    };
    let sarge = Sarge::open(Home::new(home))?;
    let deployed = sarge.deploy(std::fs::File::open(tarball)?, &process, &mut Print)?;
    println!(
        "{} is live on port {} ({:?} in all)",
        deployed.instance.id, deployed.instance.port, deployed.elapsed
    );
    for instance in sarge.list()? {
        println!(
            "{} {} {} {}",
            instance.id, instance.process, instance.port, instance.state
        );
    }
    Ok(())
}

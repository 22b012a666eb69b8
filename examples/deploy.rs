//! Deploys a tarball through the `sarge-core` API, as the `sarge` CLI does,
//! printing each step as it finishes.
//!
//! ```sh
//! cargo run -p sarge-examples --example deploy -- $SARGE_HOME app.tar [PROCESS...]
//! ```
//!
//! Then rolls back to the release before, if there is one, and lists the
//! kept releases.

use std::time::Duration;

use sarge_core::{Event, Home, ProcessName, Progress, Sarge};

/// Prints each step as it finishes; matches on the events it cares about
/// and prints the rest as they describe themselves.
struct Print;

impl Progress for Print {
    fn event(&mut self, event: &Event<'_>, elapsed: Duration) {
        match event {
            Event::Switched { address, instance } => {
                println!(
                    "{address} now reaches {} (port {})",
                    instance.id, instance.port
                )
            }
            Event::Warning { message } => println!("warning: {message}"),
            _ => match event.step() {
                Some(step) => println!(
                    "{step:>10} {:>7.1} ms  {event}",
                    elapsed.as_secs_f64() * 1e3
                ),
                None => println!("{event}"),
            },
        }
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(home), Some(tarball)) = (args.next(), args.next()) else {
        return Err("usage: deploy SARGE_HOME TARBALL [PROCESS...]".into());
    };
    // Checked here, once: a bad name fails before anything is read.
    let processes = args
        .map(|name| name.parse())
        .collect::<Result<Vec<ProcessName>, _>>()?;
    let sarge = Sarge::open(Home::new(home))?;
    let deployed = sarge.deploy(std::fs::File::open(tarball)?, &processes, &mut Print)?;
    for (instance, _) in &deployed.rolled_out.instances {
        println!(
            "{} of release {} is live on port {}",
            instance.id, deployed.rolled_out.release, instance.port
        );
    }
    println!("deployed in {:?}", deployed.elapsed);
    if sarge.releases()?.len() > 1 {
        let rolled_back = sarge.rollback(None, &mut Print)?;
        println!(
            "rolled back to {} as {} in {:?}",
            rolled_back.target, rolled_back.rolled_out.release, rolled_back.elapsed
        );
    }
    for release in sarge.releases()? {
        let mark = if release.current { "*" } else { " " };
        println!(
            "{mark} {} {} {}",
            release.id, release.created, release.description
        );
    }
    for instance in sarge.list()? {
        println!(
            "{} {} {} {}",
            instance.id, instance.process, instance.port, instance.state
        );
    }
    Ok(())
}

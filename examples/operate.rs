//! Day-two operations through the `sarge-core` API: change the env, restart,
//! and follow the logs across the restart. Each change is a release rolled
//! out with no failed request.
//!
//! ```sh
//! cargo run -p sarge-examples --example operate -- $SARGE_HOME NAME=VALUE
//! ```

use std::time::Duration;

use sarge_core::{Home, Sarge, Silent};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(home), Some(setting)) = (args.next(), args.next()) else {
        return Err("usage: operate SARGE_HOME NAME=VALUE".into());
    };
    let (name, value) = setting.split_once('=').ok_or("expected NAME=VALUE")?;
    let sarge = Sarge::open(Home::new(home))?;

    // The last lines of every instance, then a follower of what comes next.
    let (last, mut follower) = sarge.follow_logs(None, 5)?;
    for line in last {
        println!("{} | {}", line.source, line.text);
    }

    let changed = sarge.set_env(&[(name.to_owned(), value.to_owned())], true, &mut Silent)?;
    if let Some(rolled_out) = changed.rolled_out {
        println!("{name} changed in release {}", rolled_out.release);
    }
    let restarted = sarge.restart(&[], &mut Silent)?;
    println!("restarted as release {}", restarted.release);

    // The new instances' output arrives in the same stream.
    std::thread::sleep(Duration::from_millis(500));
    for line in follower.poll()? {
        println!("{} | {}", line.source, line.text);
    }
    for instance in sarge.list()? {
        println!(
            "{} {} {:?} pid {:?}",
            instance.id, instance.port, instance.release, instance.pid
        );
    }
    Ok(())
}

//! The rollout engine through the `sarge-core` API: a change described as
//! a [`RolloutPlan`], made a release and rolled out with no failed request.
//! Here, PROCESS runs COUNT instances of the code of RELEASE (default: the
//! current one), with one env value changed, while every other process
//! keeps running as it is: the kind of change no single `sarge` command
//! makes.
//!
//! ```sh
//! cargo run -p sarge-examples --example rollout -- $SARGE_HOME web 2 NAME=VALUE [v3]
//! ```

use sarge_core::{Event, Home, ProcessName, Progress, ReleaseId, Rollout, RolloutPlan, Sarge};

/// Prints what the engine does, step by step.
struct Printer;

impl Progress for Printer {
    fn event(&mut self, event: &Event<'_>, elapsed: std::time::Duration) {
        let step = event.step().unwrap_or("note");
        let ms = elapsed.as_secs_f64() * 1e3;
        eprintln!("{step:>8} {ms:6.1} ms  {event}");
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [home, process, count, setting, rest @ ..] = args.as_slice() else {
        return Err("usage: rollout SARGE_HOME PROCESS COUNT NAME=VALUE [RELEASE]".into());
    };
    let process: ProcessName = process.parse()?;
    let (name, value) = setting.split_once('=').ok_or("expected NAME=VALUE")?;
    let sarge = Sarge::open(Home::new(home.as_str()))?;

    let mut env = sarge.current_env()?;
    env.insert(name.to_owned(), value.to_owned());
    let mut plan = RolloutPlan::new(format!("{process}={count} with {name} changed"))
        .processes([process.clone()])
        .count(process, count.parse()?)
        .env(env)
        .how(Rollout::Replace);
    if let Some(release) = rest.first() {
        plan = plan.from(release.parse::<ReleaseId>()?);
    }

    let rolled_out = sarge.roll_out(&plan, &mut Printer)?;
    for (instance, address) in &rolled_out.instances {
        let serves = address.as_deref().unwrap_or("no stable address");
        println!("{} on port {} ({serves})", instance.id, instance.port);
    }
    println!("release {} is current", rolled_out.release);
    Ok(())
}

//! Which fleet: the names the scaler gives its instances and the web tier's live view
//! looks for.

use clap::Args;
use iras_protocol::env;

/// The stack and name prefix that pick one fleet out of an account (or a state directory).
/// The scaler manages that fleet; the web tier watches it. Both read the same variables, so
/// one environment file (as on the web instance) points both at the same instances.
#[derive(Debug, Clone, Args)]
pub struct FleetNaming {
    /// Instance names are this prefix plus the lowest free number.
    #[arg(long, env = env::IRAS_SCALER_NAME_PREFIX, default_value = "app-tier-")]
    pub name_prefix: String,
    /// The stack the instances belong to (EC2 tag `iras:stack`; local record directory).
    #[arg(long = "stack-name", env = env::IRAS_SCALER_STACK, default_value = "iras")]
    pub stack: String,
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        fleet: FleetNaming,
    }

    #[test]
    fn the_defaults_name_the_fleet_the_scaler_launches() {
        let cli = Cli::try_parse_from(["x"]).unwrap();
        assert_eq!(cli.fleet.name_prefix, "app-tier-");
        assert_eq!(cli.fleet.stack, "iras");
        let cli = Cli::try_parse_from(["x", "--stack-name", "s", "--name-prefix", "w-"]).unwrap();
        assert_eq!(
            (cli.fleet.stack.as_str(), cli.fleet.name_prefix.as_str()),
            ("s", "w-")
        );
    }
}

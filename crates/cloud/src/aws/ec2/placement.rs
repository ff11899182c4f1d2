//! Where a launch goes: every instance type in every subnet, preferred first, and what a
//! refused `RunInstances` means (no room here: try the next placement; the account's
//! quota: stop). Its own module because running out of room is a policy of its own,
//! tested against a fault-injecting EC2, apart from how one request is built.

use super::launch::client_token;
use super::{Ec2Fleet, SERVICE};
use crate::error::{CloudError, Result};
use crate::fleet::{Instance, Shortage};
use crate::spec::Ec2Launch;

/// `RunInstances` error codes that mean the account's limit is reached: no other
/// placement helps.
const QUOTA_CODES: &[&str] = &["VcpuLimitExceeded", "InstanceLimitExceeded"];
/// `RunInstances` error codes that mean no room in this placement: another instance type
/// or subnet (zone) may have some.
const CAPACITY_CODES: &[&str] = &[
    "InsufficientInstanceCapacity",
    "InsufficientCapacity",
    "InsufficientFreeAddressesInSubnet",
    "Unsupported",
];

/// One place to try a launch: an instance type in a subnet (`None`: EC2's default).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Placement {
    pub(super) instance_type: String,
    pub(super) subnet_id: Option<String>,
}

impl std::fmt::Display for Placement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} in {}",
            self.instance_type,
            self.subnet_id.as_deref().unwrap_or("the default subnet")
        )
    }
}

/// Every instance type in every subnet, preferred type first.
pub(super) fn placements(launch: &Ec2Launch) -> Vec<Placement> {
    let subnets: Vec<Option<String>> = if launch.subnet_ids.is_empty() {
        vec![None]
    } else {
        launch.subnet_ids.iter().cloned().map(Some).collect()
    };
    launch
        .instance_types
        .iter()
        .flat_map(|t| {
            subnets.iter().map(move |s| Placement {
                instance_type: t.clone(),
                subnet_id: s.clone(),
            })
        })
        .collect()
}

/// What one failed `RunInstances` means for the rest of the launch.
pub(super) enum RunFailure {
    /// This placement has no room: try the next.
    NoRoomHere(String),
    /// The account's quota: stop launching.
    Quota(String),
    /// Anything else: stop launching.
    Other(CloudError),
}

pub(super) fn classify_run_failure(failure: super::Failure) -> RunFailure {
    let described = || {
        format!(
            "{}: {}",
            failure.code.as_deref().unwrap_or("?"),
            failure.message
        )
    };
    if failure.has_code(QUOTA_CODES) {
        RunFailure::Quota(described())
    } else if failure.has_code(CAPACITY_CODES) {
        RunFailure::NoRoomHere(described())
    } else {
        RunFailure::Other(failure.into_error(SERVICE, "RunInstances"))
    }
}

impl Ec2Fleet {
    /// Starts `name` in the first placement with room, starting from the preferred one.
    /// Each placement gets its own client token: EC2 refuses a token reused with other
    /// parameters, and retries of one placement must still share one.
    pub(super) async fn launch_one(
        &self,
        name: &str,
        nonce: u64,
        root_device: &str,
    ) -> Result<Instance> {
        let count = self.placements.len();
        let first = *self.preferred.lock().unwrap_or_else(|p| p.into_inner()) % count;
        let mut no_room = Vec::new();
        for step in 0..count {
            let index = (first + step) % count;
            let placement = &self.placements[index];
            let token = client_token(&self.spec.stack, name, nonce.wrapping_add(index as u64));
            match self
                .run_instance(name, &token, placement, root_device)
                .await
            {
                Ok(instance) => {
                    *self.preferred.lock().unwrap_or_else(|p| p.into_inner()) = index;
                    return Ok(instance);
                }
                Err(RunFailure::NoRoomHere(why)) => {
                    tracing::warn!(name, %placement, reason = %why, "no capacity here; trying the next placement");
                    no_room.push(format!("{placement}: {why}"));
                }
                Err(RunFailure::Quota(why)) => {
                    return Err(CloudError::NoCapacity {
                        shortage: Shortage::Quota,
                        message: why,
                    });
                }
                Err(RunFailure::Other(e)) => return Err(e),
            }
        }
        Err(CloudError::NoCapacity {
            shortage: Shortage::Capacity,
            message: format!("every placement is full: {}", no_room.join("; ")),
        })
    }
}

#[cfg(test)]
mod tests {
    //! The fault-injecting EC2 of `test_support`, answering `RunInstances` per placement:
    //! capacity errors move a launch on, quota errors stop it, and what started is kept.

    use std::sync::Arc;

    use super::super::test_support::*;
    use super::*;
    use crate::fleet::Fleet;
    use crate::spec::FleetSpec;

    fn two_types_two_subnets() -> FleetSpec {
        let mut s = spec();
        if let Some(ec2) = s.ec2.as_mut() {
            ec2.instance_types = vec!["t3.micro".into(), "t3a.micro".into()];
            ec2.subnet_ids = vec!["subnet-a".into(), "subnet-b".into()];
        }
        s
    }

    fn placement_of(body: &str) -> (String, String) {
        (
            form_value(body, "InstanceType").unwrap_or_default(),
            form_value(body, "SubnetId").unwrap_or_default(),
        )
    }

    #[test]
    fn placements_are_every_type_in_every_subnet_preferred_type_first() {
        let fleet = Ec2Fleet::new(
            offline_client("http://127.0.0.1:9"),
            two_types_two_subnets(),
        )
        .unwrap();
        let got: Vec<String> = fleet.placements.iter().map(ToString::to_string).collect();
        assert_eq!(
            got,
            [
                "t3.micro in subnet-a",
                "t3.micro in subnet-b",
                "t3a.micro in subnet-a",
                "t3a.micro in subnet-b"
            ]
        );
        let mut none = spec();
        if let Some(ec2) = none.ec2.as_mut() {
            ec2.instance_types.clear();
        }
        assert!(matches!(
            Ec2Fleet::new(offline_client("http://127.0.0.1:9"), none),
            Err(CloudError::Config(_))
        ));
    }

    /// Zone a has no t3.micro capacity: each instance lands in subnet-b, and once one
    /// did, the next launch goes there first.
    #[tokio::test]
    async fn capacity_errors_move_on_to_the_next_placement_and_remember_it() {
        let counter = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let ids = counter.clone();
        let (url, bodies) = fake_ec2(move |body| match placement_of(body) {
            (t, s) if t == "t3.micro" && s == "subnet-a" => (
                "500 Internal Server Error",
                ec2_error("InsufficientInstanceCapacity", "no t3.micro in us-east-1a"),
            ),
            _ => {
                let n = ids.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                ("200 OK", run_instances_ok(&format!("i-{n}")))
            }
        })
        .await;
        let fleet = Ec2Fleet::new(offline_client(&url), two_types_two_subnets()).unwrap();
        let launched = fleet.launch(2).await.unwrap();
        assert!(launched.shortfall.is_none(), "{:?}", launched.shortfall);
        assert_eq!(launched.instances.len(), 2);
        let tried: Vec<(String, String)> = bodies
            .lock()
            .unwrap()
            .iter()
            .filter(|b| b.contains("Action=RunInstances"))
            .map(|b| placement_of(b))
            .collect();
        let a = ("t3.micro".to_owned(), "subnet-a".to_owned());
        let b = ("t3.micro".to_owned(), "subnet-b".to_owned());
        // The SDK retries the 500 (3 attempts), then subnet-b; the second instance goes to
        // subnet-b straight away.
        assert_eq!(tried, [a.clone(), a.clone(), a, b.clone(), b], "{tried:?}");
        // Each placement carries its own client token.
        let tokens: Vec<String> = bodies
            .lock()
            .unwrap()
            .iter()
            .filter(|b| b.contains("Action=RunInstances"))
            .filter_map(|b| form_value(b, "ClientToken"))
            .collect();
        assert_ne!(tokens[0], tokens[3]);
        assert_eq!(tokens[0], tokens[2]);
    }

    /// Every placement full: nothing starts, and the shortfall says capacity and lists
    /// what was tried.
    #[tokio::test]
    async fn no_capacity_anywhere_is_a_capacity_shortfall() {
        let (url, _) = fake_ec2(|body| {
            let (t, _) = placement_of(body);
            if t == "t3.micro" {
                (
                    "400 Bad Request",
                    ec2_error("Unsupported", "not in this zone"),
                )
            } else {
                (
                    "400 Bad Request",
                    ec2_error("InsufficientFreeAddressesInSubnet", "subnet full"),
                )
            }
        })
        .await;
        let fleet = Ec2Fleet::new(offline_client(&url), two_types_two_subnets()).unwrap();
        let launched = fleet.launch(3).await.unwrap();
        assert!(launched.instances.is_empty());
        let Some(CloudError::NoCapacity { shortage, message }) = launched.shortfall else {
            panic!(
                "expected a capacity shortfall, got {:?}",
                launched.shortfall
            );
        };
        assert_eq!(shortage, Shortage::Capacity);
        for tried in [
            "t3.micro in subnet-a",
            "t3a.micro in subnet-b",
            "subnet full",
        ] {
            assert!(message.contains(tried), "{message}");
        }
    }

    /// The vCPU quota after two instances: the two are kept, the launch stops at once
    /// (no other placement is tried, the quota is the account's) and says quota.
    #[tokio::test]
    async fn a_quota_error_keeps_what_started_and_stops_the_launch() {
        let counter = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let ids = counter.clone();
        let (url, bodies) = fake_ec2(move |_| {
            let n = ids.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            if n < 2 {
                ("200 OK", run_instances_ok(&format!("i-{n}")))
            } else {
                (
                    "400 Bad Request",
                    ec2_error(
                        "VcpuLimitExceeded",
                        "You have requested more vCPU capacity than your current vCPU limit of 4 allows",
                    ),
                )
            }
        })
        .await;
        let fleet = Ec2Fleet::new(offline_client(&url), two_types_two_subnets()).unwrap();
        let launched = fleet.launch(5).await.unwrap();
        let names: Vec<&str> = launched.instances.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(names, ["app-tier-1", "app-tier-2"]);
        let err = launched.shortfall.expect("stopped by the quota");
        assert!(
            matches!(&err, CloudError::NoCapacity { shortage: Shortage::Quota, message } if message.contains("VcpuLimitExceeded")),
            "{err}"
        );
        assert!(err.is_retryable());
        let runs = bodies
            .lock()
            .unwrap()
            .iter()
            .filter(|b| b.contains("Action=RunInstances"))
            .count();
        assert_eq!(runs, 3, "two that started, one refused, nothing more");
        // The two started are listed (EC2 lags; the fleet remembers them).
        assert_eq!(fleet.list().await.unwrap().len(), 2);
    }
}

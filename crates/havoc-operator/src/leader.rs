//! Leader election on a `coordination.k8s.io/v1` Lease, so two operator replicas never both
//! reconcile.
//!
//! [`decide`] is the whole policy as a pure function of the Lease as read and `now`; [`Elector`]
//! reads the Lease, applies the decision with an optimistic-concurrency replace (the
//! `resourceVersion` makes a race between two candidates fail for one of them) and reports
//! whether this replica leads.

use std::time::{Duration, SystemTime};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};

/// Name of the Lease in the operator's namespace.
pub const LEASE_NAME: &str = "havoc-operator-leader";

/// What the holder of the Lease looks like, as far as the decision needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseView {
    /// Current holder identity, if any.
    pub holder: Option<String>,
    /// Last renewal.
    pub renewed: Option<SystemTime>,
    /// How long a renewal is valid.
    pub duration: Duration,
    /// How many times leadership changed hands.
    pub transitions: i32,
}

/// What to do with the Lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// No Lease exists: create it, holding it.
    Create,
    /// We hold it: renew (set renewTime = now).
    Renew,
    /// Free or expired: take it (holder = us, transitions + 1).
    TakeOver,
    /// Someone else holds a valid Lease: follow, and check again after this long.
    Follow { retry_after: Duration },
}

/// The election policy. `lease` is `None` when no Lease exists.
pub fn decide(lease: Option<&LeaseView>, me: &str, now: SystemTime) -> Decision {
    let Some(l) = lease else {
        return Decision::Create;
    };
    match l.holder.as_deref() {
        Some(h) if h == me => Decision::Renew,
        None | Some("") => Decision::TakeOver,
        Some(_) => {
            let expires = l.renewed.map(|r| r + l.duration);
            match expires {
                Some(e) if e > now => Decision::Follow {
                    retry_after: e.duration_since(now).unwrap_or_default().min(l.duration),
                },
                _ => Decision::TakeOver,
            }
        }
    }
}

fn to_system(t: &MicroTime) -> SystemTime {
    let ms = t.0.as_millisecond();
    if ms >= 0 {
        SystemTime::UNIX_EPOCH + Duration::from_millis(ms as u64)
    } else {
        SystemTime::UNIX_EPOCH
    }
}

fn micro(t: SystemTime) -> MicroTime {
    let ms = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as i64;
    MicroTime(Timestamp::from_millisecond(ms).unwrap_or(Timestamp::UNIX_EPOCH))
}

/// The decision's view of a Lease object.
pub fn view(lease: &Lease, default_duration: Duration) -> LeaseView {
    let spec = lease.spec.clone().unwrap_or_default();
    LeaseView {
        holder: spec.holder_identity,
        renewed: spec.renew_time.as_ref().map(to_system),
        duration: spec
            .lease_duration_seconds
            .map(|s| Duration::from_secs(s.max(1) as u64))
            .unwrap_or(default_duration),
        transitions: spec.lease_transitions.unwrap_or(0),
    }
}

/// A candidate in the election.
#[derive(Debug, Clone)]
pub struct Elector {
    api: Api<Lease>,
    identity: String,
    duration: Duration,
}

impl Elector {
    /// A candidate named `identity` (the pod name) for the Lease in `namespace`.
    pub fn new(client: kube::Client, namespace: &str, identity: &str, duration: Duration) -> Self {
        Elector {
            api: Api::namespaced(client, namespace),
            identity: identity.to_string(),
            duration,
        }
    }

    /// How often to call [`Elector::try_lead`]: a third of the lease.
    pub fn period(&self) -> Duration {
        self.duration / 3
    }

    /// One round: read, decide, write. `Ok(true)` if we lead after it. A lost race (conflict)
    /// is `Ok(false)`: the other candidate won this round.
    pub async fn try_lead(&self) -> Result<bool, kube::Error> {
        let now = SystemTime::now();
        let current = self.api.get_opt(LEASE_NAME).await?;
        let decision = decide(
            current.as_ref().map(|l| view(l, self.duration)).as_ref(),
            &self.identity,
            now,
        );
        let spec = |transitions: i32, acquired: Option<MicroTime>| LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(self.duration.as_secs().max(1) as i32),
            renew_time: Some(micro(now)),
            acquire_time: acquired,
            lease_transitions: Some(transitions),
            ..Default::default()
        };
        let result = match (decision, current) {
            (Decision::Follow { .. }, _) => return Ok(false),
            (Decision::Create, _) => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(LEASE_NAME.into()),
                        ..Default::default()
                    },
                    spec: Some(spec(0, Some(micro(now)))),
                };
                self.api.create(&PostParams::default(), &lease).await
            }
            (Decision::Renew, Some(mut lease)) => {
                let old = lease.spec.clone().unwrap_or_default();
                lease.spec = Some(spec(old.lease_transitions.unwrap_or(0), old.acquire_time));
                self.api
                    .replace(LEASE_NAME, &PostParams::default(), &lease)
                    .await
            }
            (Decision::TakeOver, Some(mut lease)) => {
                let t = view(&lease, self.duration).transitions + 1;
                lease.spec = Some(spec(t, Some(micro(now))));
                self.api
                    .replace(LEASE_NAME, &PostParams::default(), &lease)
                    .await
            }
            (_, None) => return Ok(false),
        };
        match result {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Gives the lease up if this candidate holds it (the holder is cleared, so the other
    /// replica takes over at its next round instead of after the lease runs out).
    pub async fn release(&self) -> Result<(), kube::Error> {
        let Some(mut lease) = self.api.get_opt(LEASE_NAME).await? else {
            return Ok(());
        };
        let spec = lease.spec.get_or_insert_with(Default::default);
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.renew_time = Some(micro(SystemTime::now()));
        match self
            .api
            .replace(LEASE_NAME, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(()),
            // Someone else wrote it meanwhile: it is no longer ours to release.
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// The namespace a failed Lease call named as missing (`namespaces "x" not found`), if that is
/// why it failed: a missing leader-election namespace is a configuration error, not something
/// to retry.
pub fn missing_namespace(e: &kube::Error) -> Option<String> {
    let kube::Error::Api(s) = e else { return None };
    let details = s.details.as_ref();
    let is_ns =
        details.is_some_and(|d| d.kind == "namespaces") || s.message.starts_with("namespaces \"");
    if s.code != 404 || !is_ns {
        return None;
    }
    details
        .map(|d| d.name.clone())
        .filter(|n| !n.is_empty())
        .or_else(|| s.message.split('"').nth(1).map(str::to_string))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(s)
    }

    fn lease(holder: &str, renewed: u64) -> LeaseView {
        LeaseView {
            holder: Some(holder.into()),
            renewed: Some(at(renewed)),
            duration: Duration::from_secs(15),
            transitions: 3,
        }
    }

    #[test]
    fn no_lease_is_created() {
        assert_eq!(decide(None, "a", at(100)), Decision::Create);
    }

    #[test]
    fn the_holder_renews_even_late() {
        assert_eq!(decide(Some(&lease("a", 10)), "a", at(100)), Decision::Renew);
    }

    #[test]
    fn a_valid_lease_of_another_is_followed_until_it_expires() {
        assert_eq!(
            decide(Some(&lease("b", 100)), "a", at(110)),
            Decision::Follow {
                retry_after: Duration::from_secs(5)
            }
        );
        // Expiry is exclusive: at renewed + duration it is free.
        assert_eq!(
            decide(Some(&lease("b", 100)), "a", at(115)),
            Decision::TakeOver
        );
        assert_eq!(
            decide(Some(&lease("b", 100)), "a", at(500)),
            Decision::TakeOver
        );
    }

    #[test]
    fn an_empty_holder_is_taken_over() {
        let mut l = lease("b", 100);
        l.holder = None;
        assert_eq!(decide(Some(&l), "a", at(101)), Decision::TakeOver);
        l.holder = Some(String::new());
        assert_eq!(decide(Some(&l), "a", at(101)), Decision::TakeOver);
    }

    #[test]
    fn a_lease_without_renew_time_is_taken_over() {
        let mut l = lease("b", 100);
        l.renewed = None;
        assert_eq!(decide(Some(&l), "a", at(101)), Decision::TakeOver);
    }

    #[test]
    fn view_round_trips_times() {
        let l = Lease {
            metadata: ObjectMeta::default(),
            spec: Some(LeaseSpec {
                holder_identity: Some("x".into()),
                renew_time: Some(micro(at(1234))),
                lease_duration_seconds: Some(20),
                lease_transitions: Some(2),
                ..Default::default()
            }),
        };
        let v = view(&l, Duration::from_secs(15));
        assert_eq!(v.renewed, Some(at(1234)));
        assert_eq!(v.duration, Duration::from_secs(20));
        assert_eq!(v.transitions, 2);
    }
}

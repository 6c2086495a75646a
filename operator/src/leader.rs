//! Optional leader election for two or more operator replicas: a `coordination.k8s.io` Lease
//! held by one pod at a time, taken over when its holder stops renewing it. Writes use the
//! Lease's resourceVersion, so two pods can never both win the same round.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};
use tracing::{info, warn};

/// Seconds a Lease stays valid without renewal.
pub const LEASE_SECONDS: i32 = 15;
/// How often the holder renews (and others retry).
pub const RENEW_EVERY: Duration = Duration::from_secs(5);

/// Who competes for which Lease.
#[derive(Debug, Clone)]
pub struct Election {
    /// Lease namespace (the operator's own).
    pub namespace: String,
    /// Lease name.
    pub name: String,
    /// This pod's identity.
    pub identity: String,
}

/// Whether `lease` lets `identity` take or keep it at `now`.
pub fn may_hold(lease: &LeaseSpec, identity: &str, now: Timestamp) -> bool {
    if lease.holder_identity.as_deref().is_none_or(|h| h == identity || h.is_empty()) {
        return true;
    }
    let duration = i64::from(lease.lease_duration_seconds.unwrap_or(LEASE_SECONDS));
    match &lease.renew_time {
        Some(renewed) => renewed.0.as_second() + duration < now.as_second(),
        None => true,
    }
}

impl Election {
    /// One round: takes or renews the Lease; `Ok(true)` when this pod holds it now.
    pub async fn try_acquire(&self, client: &Client) -> Result<bool, kube::Error> {
        let api: Api<Lease> = Api::namespaced(client.clone(), &self.namespace);
        let now = Timestamp::now();
        let Some(mut lease) = api.get_opt(&self.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta { name: Some(self.name.clone()), ..Default::default() },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.identity.clone()),
                    lease_duration_seconds: Some(LEASE_SECONDS),
                    acquire_time: Some(MicroTime(now)),
                    renew_time: Some(MicroTime(now)),
                    lease_transitions: Some(0),
                    ..Default::default()
                }),
            };
            return match api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(s)) if s.is_already_exists() => Ok(false),
                Err(err) => Err(err),
            };
        };
        let mut spec = lease.spec.clone().unwrap_or_default();
        if !may_hold(&spec, &self.identity, now) {
            return Ok(false);
        }
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            spec.holder_identity = Some(self.identity.clone());
            spec.acquire_time = Some(MicroTime(now));
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
        spec.renew_time = Some(MicroTime(now));
        spec.lease_duration_seconds = Some(LEASE_SECONDS);
        lease.spec = Some(spec);
        // `replace` carries the resourceVersion we read: a concurrent writer makes this a 409.
        match api.replace(&self.name, &PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(err) => Err(err),
        }
    }

    /// Waits until this pod holds the Lease, then keeps renewing it in the background. If a
    /// renewal fails for a whole lease period the process exits, so a pod that lost the Lease
    /// never keeps reconciling next to the new leader.
    pub async fn lead(self, client: Client) {
        loop {
            match self.try_acquire(&client).await {
                Ok(true) => break,
                Ok(false) => {}
                Err(err) => warn!(%err, "leader election: cannot read or write the Lease"),
            }
            tokio::time::sleep(RENEW_EVERY).await;
        }
        info!(lease = %self.name, identity = %self.identity, "leader election: leading");
        tokio::spawn(async move {
            let mut last_renewal = tokio::time::Instant::now();
            loop {
                tokio::time::sleep(RENEW_EVERY).await;
                match self.try_acquire(&client).await {
                    Ok(true) => last_renewal = tokio::time::Instant::now(),
                    Ok(false) => {
                        warn!("leader election: another pod holds the Lease; exiting");
                        std::process::exit(1);
                    }
                    Err(err) => warn!(%err, "leader election: renewal failed"),
                }
                if last_renewal.elapsed() > Duration::from_secs(LEASE_SECONDS as u64) {
                    warn!("leader election: could not renew the Lease in time; exiting");
                    std::process::exit(1);
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(holder: &str, renewed: i64) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(holder.into()),
            lease_duration_seconds: Some(15),
            renew_time: Some(MicroTime(Timestamp::from_second(renewed).expect("time"))),
            ..Default::default()
        }
    }

    #[test]
    fn a_fresh_lease_of_another_pod_is_respected_and_an_expired_one_taken() {
        let now = Timestamp::from_second(1000).expect("time");
        assert!(!may_hold(&lease("pod-a", 990), "pod-b", now), "renewed 10 s ago: still pod-a's");
        assert!(may_hold(&lease("pod-a", 980), "pod-b", now), "renewed 20 s ago: expired");
        assert!(may_hold(&lease("pod-b", 999), "pod-b", now), "our own lease is renewed");
        assert!(may_hold(&LeaseSpec::default(), "pod-b", now), "an empty lease is free");
    }
}

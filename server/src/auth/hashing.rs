//! Bounded Argon2id work: at most N PIN checks run at once, each on a
//! reusable 19 MiB block that is wiped after every use, off the async
//! threads. Memory under a login storm is N blocks, whatever the allocator.

use clinauth_factors::pin::{PinError, PinHasher, SecretPin};
use std::sync::Mutex;
use tokio::sync::Semaphore;

/// The PIN-hashing pool.
pub struct Hashing {
    permits: Semaphore,
    hashers: Mutex<Vec<PinHasher>>,
}

impl std::fmt::Debug for Hashing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Hashing({} free)", self.permits.available_permits())
    }
}

/// The check could not run (the pool or the worker thread failed).
#[derive(Debug, thiserror::Error)]
#[error("PIN check unavailable")]
pub struct Unavailable;

impl Hashing {
    /// A pool of `max` concurrent checks (at least one).
    pub fn new(max: usize) -> Hashing {
        Hashing {
            permits: Semaphore::new(max.clamp(1, 256)),
            hashers: Mutex::new(Vec::new()),
        }
    }

    /// Verifies `pin` against `phc`, or spends the same work on a dummy
    /// hash when the user has no PIN (so timing does not tell).
    pub async fn verify(
        &self,
        pin: SecretPin,
        phc: Option<String>,
    ) -> Result<Result<(), PinError>, Unavailable> {
        let _permit = self.permits.acquire().await.map_err(|_| Unavailable)?;
        let reused = self.hashers.lock().ok().and_then(|mut v| v.pop());
        let mut hasher = match reused {
            Some(h) => h,
            None => PinHasher::new().map_err(|_| Unavailable)?,
        };
        let (hasher, result) = tokio::task::spawn_blocking(move || {
            let result = match phc {
                Some(phc) => hasher.verify_pin(&pin, &phc),
                None => hasher.verify_dummy(&pin),
            };
            (hasher, result)
        })
        .await
        .map_err(|_| Unavailable)?;
        if let Ok(mut pool) = self.hashers.lock() {
            pool.push(hasher);
        }
        Ok(result)
    }

    /// Blocks kept for reuse (never more than the concurrency bound).
    pub fn pooled(&self) -> usize {
        self.hashers.lock().map(|v| v.len()).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn bounded_pool_reuses_its_blocks() {
        let hashing = Arc::new(Hashing::new(2));
        let pin = || SecretPin::from_text("58204913").unwrap();
        let phc =
            clinauth_factors::pin::hash_pin(&pin(), &ring::rand::SystemRandom::new()).unwrap();
        let mut tasks = Vec::new();
        for i in 0..6 {
            let h = hashing.clone();
            let phc = phc.clone();
            tasks.push(tokio::spawn(async move {
                let candidate = if i % 2 == 0 {
                    pin()
                } else {
                    SecretPin::from_text("00000000").unwrap()
                };
                (i, h.verify(candidate, Some(phc)).await.unwrap())
            }));
        }
        for t in tasks {
            let (i, r) = t.await.unwrap();
            assert_eq!(r.is_ok(), i % 2 == 0, "attempt {i}");
        }
        assert!(hashing.pooled() <= 2, "never more blocks than permits");
        assert!(
            hashing.verify(pin(), None).await.unwrap().is_err(),
            "no PIN enrolled"
        );
    }
}

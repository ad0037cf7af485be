//! Credentials that expire: fetched in the background, cached, and refreshed before they
//! expire, so that the request path only ever reads the current value.
//!
//! A [`Refreshing`] value starts a task on the async runtime that calls its [`Fetch`] at once,
//! then again five minutes before the value expires (or halfway there for short-lived values).
//! A failed fetch is retried with backoff (1 s doubling to 60 s) while the previous value, if it
//! has not expired, keeps serving. The task holds only a weak reference and ends when the
//! configuration that owns the value is dropped.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwapOption;

use super::AuthError;

/// Refresh this long before expiry.
const EARLY: Duration = Duration::from_secs(5 * 60);
/// Re-fetch values that state no expiry (for example to pick up a rotated file) this often.
const NO_EXPIRY_REFRESH: Duration = Duration::from_secs(60 * 60);
/// The longest wait between failed attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// A fetched value and when it stops being valid.
#[derive(Debug, Clone)]
pub struct Fetched<T> {
    /// The value.
    pub value: T,
    /// When it expires (`None`: it does not say).
    pub expires_at: Option<SystemTime>,
}

/// A boxed future, as [`Fetch`] returns.
pub type FetchFuture<'a, T> = Pin<Box<dyn Future<Output = Result<Fetched<T>, String>> + Send + 'a>>;

/// Boxes `fetch` as a [`FetchFuture`]: its typed error becomes the message it displays.
pub fn boxed<'a, T, E: std::fmt::Display>(
    fetch: impl Future<Output = Result<Fetched<T>, E>> + Send + 'a,
) -> FetchFuture<'a, T> {
    Box::pin(async move { fetch.await.map_err(|err| err.to_string()) })
}

/// A credential that refreshes in the background was configured where no async runtime runs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what}: refreshing credentials needs the async runtime")]
pub struct NoRuntime {
    /// The credential, as logs name it (never a secret).
    pub what: String,
}

/// Something that obtains a fresh value (a token, temporary AWS credentials). The error is a
/// message for logs and for the 503 a request gets while no value is available; it must never
/// contain a secret.
pub trait Fetch: Send + Sync + 'static {
    /// The value fetched.
    type Output: Send + Sync + 'static;
    /// Fetches a fresh value.
    fn fetch(&self) -> FetchFuture<'_, Self::Output>;
}

struct Current<T> {
    value: Arc<T>,
    expires_at: Option<SystemTime>,
}

/// A value kept fresh in the background.
pub struct Refreshing<T> {
    what: String,
    current: ArcSwapOption<Current<T>>,
    error: Mutex<Option<String>>,
    changed: tokio::sync::Notify,
}

impl<T> std::fmt::Debug for Refreshing<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Refreshing")
            .field("what", &self.what)
            .field("ready", &self.current.load().is_some())
            .finish()
    }
}

impl<T: Send + Sync + 'static> Refreshing<T> {
    /// A value that never changes.
    pub fn fixed(what: impl Into<String>, value: T) -> Arc<Self> {
        let this = Refreshing::empty(what.into());
        this.current.store(Some(Arc::new(Current {
            value: Arc::new(value),
            expires_at: None,
        })));
        Arc::new(this)
    }

    fn empty(what: String) -> Self {
        Refreshing {
            what,
            current: ArcSwapOption::empty(),
            error: Mutex::new(None),
            changed: tokio::sync::Notify::new(),
        }
    }

    /// Starts fetching with `fetch` on the current async runtime; `what` names the credential
    /// in logs (never a secret).
    pub fn start<F: Fetch<Output = T>>(
        what: impl Into<String>,
        fetch: F,
    ) -> Result<Arc<Self>, NoRuntime> {
        let what = what.into();
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return Err(NoRuntime { what });
        };
        let this = Arc::new(Refreshing::empty(what));
        handle.spawn(refresh_loop(Arc::downgrade(&this), fetch));
        Ok(this)
    }

    /// The current value; an error when none was fetched yet or the last one expired.
    pub fn get(&self) -> Result<Arc<T>, AuthError> {
        if let Some(current) = self.current.load_full()
            && current.expires_at.is_none_or(|at| at > SystemTime::now())
        {
            return Ok(current.value.clone());
        }
        let reason = self
            .error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .unwrap_or_else(|| "still being fetched".to_string());
        Err(AuthError::Unavailable(format!("{}: {reason}", self.what)))
    }

    /// Waits until a value is available or `timeout` passes; true when one is.
    pub async fn ready(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.changed.notified();
            if self.get().is_ok() {
                return true;
            }
            if self
                .error
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .is_some()
            {
                return false;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.get().is_ok();
            }
        }
    }

    fn store(&self, fetched: Fetched<T>) {
        self.current.store(Some(Arc::new(Current {
            value: Arc::new(fetched.value),
            expires_at: fetched.expires_at,
        })));
        *self.error.lock().unwrap_or_else(|p| p.into_inner()) = None;
        self.changed.notify_waiters();
    }

    fn fail(&self, error: String) {
        tracing::warn!(credential = %self.what, error = %error, "fetching a backend credential failed");
        *self.error.lock().unwrap_or_else(|p| p.into_inner()) = Some(error);
        self.changed.notify_waiters();
    }
}

/// How long to wait before refreshing a value that expires at `expires_at`.
pub fn refresh_after(expires_at: Option<SystemTime>, now: SystemTime) -> Duration {
    let Some(at) = expires_at else {
        return NO_EXPIRY_REFRESH;
    };
    let left = at.duration_since(now).unwrap_or_default();
    let wait = if left > 2 * EARLY {
        left - EARLY
    } else {
        left / 2
    };
    wait.max(Duration::from_secs(1))
}

/// The wait after `failures` consecutive failures.
pub fn backoff(failures: u32) -> Duration {
    let secs = 1u64 << failures.saturating_sub(1).min(6);
    Duration::from_secs(secs).min(MAX_BACKOFF)
}

async fn refresh_loop<T: Send + Sync + 'static, F: Fetch<Output = T>>(
    weak: Weak<Refreshing<T>>,
    fetch: F,
) {
    let mut failures = 0u32;
    loop {
        if weak.strong_count() == 0 {
            return;
        }
        let result = fetch.fetch().await;
        let Some(this) = weak.upgrade() else {
            return;
        };
        let wait = match result {
            Ok(fetched) => {
                failures = 0;
                let wait = refresh_after(fetched.expires_at, SystemTime::now());
                this.store(fetched);
                wait
            }
            Err(error) => {
                failures = failures.saturating_add(1);
                this.fail(error);
                backoff(failures)
            }
        };
        drop(this);
        tokio::time::sleep(wait).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[test]
    fn refreshes_early() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let hour = Duration::from_secs(3600);
        assert_eq!(refresh_after(Some(now + hour), now), hour - EARLY);
        assert_eq!(
            refresh_after(Some(now + Duration::from_secs(120)), now),
            Duration::from_secs(60)
        );
        assert_eq!(refresh_after(Some(now), now), Duration::from_secs(1));
        assert_eq!(refresh_after(None, now), NO_EXPIRY_REFRESH);
        assert_eq!(backoff(1), Duration::from_secs(1));
        assert_eq!(backoff(3), Duration::from_secs(4));
        assert_eq!(backoff(40), MAX_BACKOFF);
    }

    struct Counter(Arc<AtomicU32>, bool);

    impl Fetch for Counter {
        type Output = u32;
        fn fetch(&self) -> FetchFuture<'_, u32> {
            Box::pin(async move {
                let n = self.0.fetch_add(1, Ordering::SeqCst);
                if self.1 {
                    return Err("identity provider said no".to_string());
                }
                Ok(Fetched {
                    value: n,
                    expires_at: Some(SystemTime::now() + Duration::from_secs(3600)),
                })
            })
        }
    }

    #[tokio::test]
    async fn fetches_then_serves_from_cache() {
        let calls = Arc::new(AtomicU32::new(0));
        let value = Refreshing::start("test token", Counter(calls.clone(), false)).unwrap();
        assert!(value.ready(Duration::from_secs(5)).await);
        assert_eq!(*value.get().unwrap(), 0);
        assert_eq!(*value.get().unwrap(), 0);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_failure_is_reported_and_retried() {
        let calls = Arc::new(AtomicU32::new(0));
        let value = Refreshing::start("test token", Counter(calls.clone(), true)).unwrap();
        assert!(!value.ready(Duration::from_secs(5)).await);
        let err = value.get().unwrap_err().to_string();
        assert!(
            err.contains("test token: identity provider said no"),
            "{err}"
        );
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert!(calls.load(Ordering::SeqCst) >= 2);
    }

    /// Values that expire two seconds after they are fetched.
    struct ShortLived(Arc<AtomicU32>);

    impl Fetch for ShortLived {
        type Output = u32;
        fn fetch(&self) -> FetchFuture<'_, u32> {
            Box::pin(async move {
                Ok(Fetched {
                    value: self.0.fetch_add(1, Ordering::SeqCst),
                    expires_at: Some(SystemTime::now() + Duration::from_secs(2)),
                })
            })
        }
    }

    #[tokio::test]
    async fn a_value_is_replaced_before_it_expires() {
        let calls = Arc::new(AtomicU32::new(0));
        let value = Refreshing::start("short-lived token", ShortLived(calls.clone())).unwrap();
        assert!(value.ready(Duration::from_secs(5)).await);
        assert_eq!(*value.get().unwrap(), 0);
        // Refreshed halfway to expiry (1 s), well before the 2 s lifetime ends.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while *value.get().unwrap() == 0 {
            assert!(tokio::time::Instant::now() < deadline, "never refreshed");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(*value.get().unwrap(), 1);
    }

    #[tokio::test]
    async fn the_refresh_task_ends_with_its_value() {
        let calls = Arc::new(AtomicU32::new(0));
        let value = Refreshing::start("short-lived token", ShortLived(calls.clone())).unwrap();
        assert!(value.ready(Duration::from_secs(5)).await);
        drop(value);
        let before = calls.load(Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(2500)).await;
        assert_eq!(calls.load(Ordering::SeqCst), before);
    }

    #[test]
    fn fixed_values_need_no_runtime() {
        let value = Refreshing::fixed("key", 7u8);
        assert_eq!(*value.get().unwrap(), 7);
    }

    #[test]
    fn refreshing_values_need_the_runtime() {
        let calls = Arc::new(AtomicU32::new(0));
        let err = Refreshing::start("test token", Counter(calls, false)).unwrap_err();
        assert_eq!(
            err,
            NoRuntime {
                what: "test token".into()
            }
        );
        assert_eq!(
            err.to_string(),
            "test token: refreshing credentials needs the async runtime"
        );
    }
}

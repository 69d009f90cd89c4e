//! fprintd (`net.reactivated.Fprint`) over D-Bus: claim a device for a
//! user, start a verification, wait for the final `VerifyStatus` signal,
//! stop, release.
//!
//! **This is not a login factor.** fprintd answers `verify-match` as a
//! D-Bus signal from a daemon on the workstation: there is no reader key,
//! the server's nonce goes nowhere, nothing is signed. Whatever the sensor
//! did, the server would only have the workstation's word for it, which is
//! the trust of a host-matched biometric (`biometric_host_match`, never
//! accepted) and fails R-BIO-3 (enrolled readers with their own keys, each
//! capture bound to a server nonce and signed). fprintd's D-Bus interface
//! does not even say whether a device matches on the sensor. So the login
//! flow never turns an fprintd match into evidence
//! ([`super::Biometric::has_fprintd`] is `false`); this client is what the
//! agent would build on if a sensor behind fprintd could sign its
//! decisions (docs/BIOMETRICS.md, "fprintd").
//!
//! The bus address is configurable (tests run a private bus); the default
//! is the system bus.

use std::time::Duration;

use futures_util::StreamExt;
use zbus::zvariant::OwnedObjectPath;

mod proxies {
    use zbus::zvariant::OwnedObjectPath;

    #[zbus::proxy(
        interface = "net.reactivated.Fprint.Manager",
        default_service = "net.reactivated.Fprint",
        default_path = "/net/reactivated/Fprint/Manager",
        gen_blocking = false
    )]
    pub(super) trait Manager {
        fn get_devices(&self) -> zbus::Result<Vec<OwnedObjectPath>>;
        fn get_default_device(&self) -> zbus::Result<OwnedObjectPath>;
    }

    #[zbus::proxy(
        interface = "net.reactivated.Fprint.Device",
        default_service = "net.reactivated.Fprint",
        gen_blocking = false
    )]
    pub(super) trait Device {
        fn claim(&self, username: &str) -> zbus::Result<()>;
        fn release(&self) -> zbus::Result<()>;
        fn verify_start(&self, finger_name: &str) -> zbus::Result<()>;
        fn verify_stop(&self) -> zbus::Result<()>;
        #[zbus(signal)]
        fn verify_status(&self, result: &str, done: bool) -> zbus::Result<()>;
        #[zbus(property, name = "name")]
        fn name(&self) -> zbus::Result<String>;
    }
}

/// Why fprintd could not verify.
#[derive(Debug, thiserror::Error)]
pub enum FprintdError {
    /// A D-Bus call failed (fprintd's errors are
    /// `net.reactivated.Fprint.Error.*`: no prints, already claimed, …).
    #[error("fprintd: {0}")]
    DBus(#[from] zbus::Error),
    /// fprintd has no device.
    #[error("fprintd has no fingerprint device")]
    NoDevice,
    /// No final status in time.
    #[error("fprintd gave no verdict in time")]
    Timeout,
    /// The signal stream ended (fprintd or the bus went away).
    #[error("fprintd went away")]
    Gone,
}

/// fprintd's final verify status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// `verify-match`.
    Match,
    /// `verify-no-match`.
    NoMatch,
    /// Another final status (`verify-disconnected`, `verify-unknown-error`).
    Other(String),
}

/// A connection to fprintd.
#[derive(Debug, Clone)]
pub struct FprintdClient {
    conn: zbus::Connection,
}

impl FprintdClient {
    /// Connects to the bus at `address` (a D-Bus address such as
    /// `unix:path=/run/dbus/system_bus_socket`), or the system bus.
    pub async fn connect(address: Option<&str>) -> Result<FprintdClient, FprintdError> {
        let conn = match address {
            Some(a) => zbus::connection::Builder::address(a)?.build().await?,
            None => zbus::Connection::system().await?,
        };
        Ok(FprintdClient { conn })
    }

    /// fprintd's devices (object paths).
    pub async fn devices(&self) -> Result<Vec<String>, FprintdError> {
        let manager = proxies::ManagerProxy::new(&self.conn).await?;
        Ok(manager
            .get_devices()
            .await?
            .into_iter()
            .map(|p| p.as_str().to_owned())
            .collect())
    }

    /// The device's name (libfprint's driver name).
    pub async fn device_name(&self, device: &str) -> Result<String, FprintdError> {
        Ok(self.device(device).await?.name().await?)
    }

    async fn device(&self, path: &str) -> Result<proxies::DeviceProxy<'static>, FprintdError> {
        let path = OwnedObjectPath::try_from(path.to_owned()).map_err(zbus::Error::from)?;
        Ok(proxies::DeviceProxy::builder(&self.conn)
            .path(path)?
            .cache_properties(zbus::proxy::CacheProperties::No)
            .build()
            .await?)
    }

    /// Verifies `user`'s `finger` (or `any`) on `device` (default: the
    /// first): claims the device, starts the verification, waits up to
    /// `timeout` for a final status (retry statuses only wait longer),
    /// stops and releases — also on failure.
    pub async fn verify(
        &self,
        device: Option<&str>,
        user: &str,
        finger: &str,
        timeout: Duration,
    ) -> Result<Verdict, FprintdError> {
        let path = match device {
            Some(d) => d.to_owned(),
            None => self
                .devices()
                .await?
                .into_iter()
                .next()
                .ok_or(FprintdError::NoDevice)?,
        };
        let device = self.device(&path).await?;
        // Subscribed before the start, so that no status is missed.
        let mut statuses = device.receive_verify_status().await?;
        device.claim(user).await?;
        let outcome = async {
            device.verify_start(finger).await?;
            let verdict = tokio::time::timeout(timeout, async {
                while let Some(signal) = statuses.next().await {
                    let args = signal.args()?;
                    if *args.done() {
                        return Ok(match *args.result() {
                            "verify-match" => Verdict::Match,
                            "verify-no-match" => Verdict::NoMatch,
                            other => Verdict::Other(other.to_owned()),
                        });
                    }
                }
                Err(FprintdError::Gone)
            })
            .await
            .map_err(|_| FprintdError::Timeout);
            let stopped = device.verify_stop().await;
            let verdict = verdict??;
            stopped?;
            Ok::<_, FprintdError>(verdict)
        }
        .await;
        let released = device.release().await;
        let verdict = outcome?;
        released?;
        Ok(verdict)
    }
}

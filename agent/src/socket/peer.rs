//! Who is on the other end of the socket, and what they may ask
//! (ARCHITECTURE.md, trust boundaries).
//!
//! The kernel vouches for the caller's uid and pid (`SO_PEERCRED`); the
//! request's claims never decide. Root (the PAM stack of login, gdm, sudo)
//! may authenticate any user and manage sessions; a desktop user may ask
//! only about themselves (a screen locker unlocking their session, a
//! clinical app asking for a step-up); everyone else is refused.

use std::ffi::CStr;

use clinauth_policy::Purpose;
use clinauth_proto::agent::Request;

/// The caller, as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// User ID.
    pub uid: u32,
    /// Group ID.
    pub gid: u32,
    /// Process ID, when the kernel gave one.
    pub pid: Option<i32>,
    /// The uid's login name, if it has one.
    pub name: Option<String>,
}

impl Peer {
    /// Whether the caller is root.
    pub fn is_root(&self) -> bool {
        self.uid == 0
    }

    /// For the log.
    pub fn describe(&self) -> String {
        format!(
            "uid={} ({}) pid={}",
            self.uid,
            self.name.as_deref().unwrap_or("?"),
            self.pid.map_or_else(|| "?".into(), |p| p.to_string())
        )
    }
}

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Refusal(pub &'static str);

/// Whether `peer` may send `request`.
pub fn authorize(peer: &Peer, request: &Request) -> Result<(), Refusal> {
    if peer.is_root() {
        return Ok(());
    }
    let own = |user: &str| peer.name.as_deref() == Some(user);
    match request {
        // Answers and cancels belong to a conversation already authorized.
        Request::Answer { .. } | Request::Cancel {} | Request::Status {} => Ok(()),
        Request::Authenticate { user, purpose, .. } => {
            if !own(user.as_str()) {
                return Err(Refusal(
                    "only root may authenticate another user; a desktop user may authenticate only themselves",
                ));
            }
            match purpose {
                // A screen locker runs as the session's user and relays the
                // prompts through PAM.
                Purpose::Unlock => Ok(()),
                // An app would see the PIN in a conversation: apps use
                // step_up, decide_record and sign, whose PINs go to pinentry.
                Purpose::StepUp | Purpose::Confirm | Purpose::Sign => Err(Refusal(
                    "apps ask for step_up, decide_record or sign (the PIN goes to pinentry, never to the app)",
                )),
                Purpose::Login | Purpose::BreakGlass => Err(Refusal(
                    "login and break-glass authentications are for the PAM stack (root) only",
                )),
            }
        }
        // Clinical apps act for the user they run as (R-AUTH-5).
        Request::StepUp { user, .. }
        | Request::RegisterRecord { user, .. }
        | Request::PendingRecords { user }
        | Request::DecideRecord { user, .. }
        | Request::Sign { user, .. } => match user {
            None if peer.name.is_some() => Ok(()),
            Some(user) if own(user.as_str()) => Ok(()),
            _ => Err(Refusal("an app may act only for the user it runs as")),
        },
        // The daemon checks that the caller entered or confirms the record.
        Request::GetRecord { .. } | Request::Subscribe {} if peer.name.is_some() => Ok(()),
        Request::GetRecord { .. } | Request::Subscribe {} => {
            Err(Refusal("the caller's uid has no user name"))
        }
        Request::Account { .. } | Request::OpenSession { .. } | Request::CloseSession { .. } => {
            Err(Refusal(
                "account and session requests are for the PAM stack (root) only",
            ))
        }
    }
}

/// The login name of `uid`, from the system's user database (NSS).
pub fn user_name(uid: u32) -> Option<String> {
    let mut buf = vec![0u8; 4096];
    loop {
        // SAFETY: `passwd` is plain old data, valid when zeroed.
        let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        // SAFETY: every pointer is valid for the call: `pwd` and `result`
        // are locals, `buf` is writable for `buf.len()` bytes and outlives
        // the use of the strings getpwuid_r points into it.
        let rc = unsafe {
            libc::getpwuid_r(
                uid,
                &mut pwd,
                buf.as_mut_ptr().cast(),
                buf.len(),
                &mut result,
            )
        };
        if rc == libc::ERANGE && buf.len() < 1 << 20 {
            buf.resize(buf.len() * 2, 0);
            continue;
        }
        if rc != 0 || result.is_null() || pwd.pw_name.is_null() {
            return None;
        }
        // SAFETY: on success `pw_name` points to a NUL-terminated string
        // inside `buf`, which is alive here.
        let name = unsafe { CStr::from_ptr(pwd.pw_name) };
        return name.to_str().ok().map(str::to_owned);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clinauth_proto::{Label, UserName};

    fn peer(uid: u32, name: &str) -> Peer {
        Peer {
            uid,
            gid: uid,
            pid: Some(4242),
            name: Some(name.into()),
        }
    }

    fn auth(user: &str, purpose: Purpose) -> Request {
        Request::Authenticate {
            user: UserName::new(user).unwrap(),
            purpose,
            service: Label::new("test").unwrap(),
            tty: None,
            rhost: None,
        }
    }

    #[test]
    fn root_may_authenticate_anyone() {
        for purpose in Purpose::ALL {
            assert!(authorize(&peer(0, "root"), &auth("yamada", purpose)).is_ok());
        }
    }

    #[test]
    fn a_user_only_about_themselves() {
        let yamada = peer(1000, "yamada");
        assert!(authorize(&yamada, &auth("yamada", Purpose::Unlock)).is_ok());
        assert!(authorize(&yamada, &auth("suzuki", Purpose::Unlock)).is_err());
        // Apps never converse for a PIN: their operations go to pinentry.
        for purpose in [Purpose::StepUp, Purpose::Confirm, Purpose::Sign] {
            assert!(authorize(&yamada, &auth("yamada", purpose)).is_err());
        }
        let step_up = |user: Option<&str>| Request::StepUp {
            user: user.map(|u| UserName::new(u).unwrap()),
            action: clinauth_proto::records::Action::new("order.opioid").unwrap(),
            max_age: 60,
        };
        assert!(authorize(&yamada, &step_up(None)).is_ok());
        assert!(authorize(&yamada, &step_up(Some("yamada"))).is_ok());
        assert!(authorize(&yamada, &step_up(Some("suzuki"))).is_err());
        assert!(authorize(&yamada, &Request::Subscribe {}).is_ok());
        assert!(authorize(&yamada, &auth("yamada", Purpose::Login)).is_err());
        assert!(authorize(&yamada, &auth("yamada", Purpose::BreakGlass)).is_err());
        let session = Request::OpenSession {
            user: UserName::new("yamada").unwrap(),
            service: Label::new("login").unwrap(),
            session_id: None,
            tty: None,
        };
        assert!(authorize(&yamada, &session).is_err());
        assert!(authorize(&peer(0, "root"), &session).is_ok());
    }

    #[test]
    fn a_uid_without_a_name_is_nobody() {
        let nameless = Peer {
            uid: 4_000_000,
            gid: 0,
            pid: None,
            name: None,
        };
        assert!(authorize(&nameless, &auth("yamada", Purpose::Unlock)).is_err());
        assert!(authorize(&nameless, &Request::Subscribe {}).is_err());
        assert!(authorize(&nameless, &Request::PendingRecords { user: None }).is_err());
    }

    #[test]
    fn root_has_a_name() {
        assert_eq!(user_name(0).as_deref(), Some("root"));
        assert_eq!(user_name(4_000_000_000), None);
    }
}

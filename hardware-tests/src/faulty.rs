//! A misbehaving PIV card, to prove that the agent's driver fails with a
//! clear error (never a panic, never a hang) when a card answers nonsense,
//! falls silent or leaves mid-command.
//!
//! [`FaultyCard`] wraps a healthy [`PivApplet`] and spoils the answer to
//! commands with one instruction byte ([`FaultyCard::new`]'s `ins`), in the
//! way [`Fault`] says. Everything else is answered normally, so a test can
//! get as far as the faulty step.

use crate::piv::PivApplet;
use crate::vpcd::{Reply, VirtualIcc};

/// INS of SELECT.
pub const INS_SELECT: u8 = 0xA4;
/// INS of GET DATA.
pub const INS_GET_DATA: u8 = 0xCB;
/// INS of VERIFY.
pub const INS_VERIFY: u8 = 0x20;
/// INS of GENERAL AUTHENTICATE.
pub const INS_GENERAL_AUTHENTICATE: u8 = 0x87;
/// INS of GET RESPONSE.
pub const INS_GET_RESPONSE: u8 = 0xC0;

/// How the card misbehaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Behaves.
    None,
    /// Answers a single byte (no status word).
    ShortResponse,
    /// Answers only this status word.
    StatusWord(u16),
    /// Cuts the response data to this many bytes and says `90 00`
    /// (a signature or certificate of the wrong length).
    TruncateData(usize),
    /// Makes the first TLV length of the response data claim more than
    /// there is (`82 FF FF`).
    BrokenTlv,
    /// Flips a byte in the middle of the response data.
    CorruptData,
    /// Answers `61 00` and then 256 bytes and `61 00` to every GET RESPONSE,
    /// for ever.
    EndlessGetResponse,
    /// Never answers.
    Mute,
    /// Leaves the reader mid-command.
    HangUp,
}

/// A PIV card that misbehaves on one instruction.
#[derive(Debug)]
pub struct FaultyCard {
    inner: PivApplet,
    ins: u8,
    fault: Fault,
    endless: bool,
    /// A spoiled response being handed out with `61 xx`.
    pending: Vec<u8>,
    pending_sw: [u8; 2],
}

impl FaultyCard {
    /// A card that answers commands with instruction `ins` with `fault`.
    pub fn new(inner: PivApplet, ins: u8, fault: Fault) -> Self {
        Self {
            inner,
            ins,
            fault,
            endless: false,
            pending: Vec::new(),
            pending_sw: [0x90, 0x00],
        }
    }

    /// Changes the fault (e.g. to let a test get past a step first).
    pub fn set_fault(&mut self, ins: u8, fault: Fault) {
        self.ins = ins;
        self.fault = fault;
    }

    /// The healthy card inside.
    pub fn inner(&self) -> &PivApplet {
        &self.inner
    }
}

fn split(resp: &[u8]) -> (&[u8], &[u8]) {
    resp.split_at(resp.len().saturating_sub(2))
}

impl VirtualIcc for FaultyCard {
    fn atr(&self) -> Vec<u8> {
        self.inner.atr()
    }

    fn power_event(&mut self, _ctrl: u8) {
        self.endless = false;
        self.pending.clear();
        self.inner.reset_session();
    }

    fn transmit(&mut self, apdu: &[u8]) -> Vec<u8> {
        self.inner.process(apdu)
    }

    fn reply(&mut self, apdu: &[u8]) -> Reply {
        let ins = apdu.get(1).copied().unwrap_or(0);
        if self.endless && ins == INS_GET_RESPONSE {
            let mut r = vec![0xAA; 256];
            r.extend_from_slice(&[0x61, 0x00]);
            return Reply::Response(r);
        }
        if ins == INS_GET_RESPONSE && !self.pending.is_empty() {
            return Reply::Response(self.next_piece());
        }
        self.pending.clear();
        if ins != self.ins || self.fault == Fault::None {
            return Reply::Response(self.inner.process(apdu));
        }
        match self.fault.clone() {
            Fault::None => Reply::Response(self.inner.process(apdu)),
            Fault::Mute => Reply::Silence,
            Fault::HangUp => Reply::HangUp,
            Fault::ShortResponse => Reply::Response(vec![0x90]),
            Fault::StatusWord(sw) => Reply::Response(sw.to_be_bytes().to_vec()),
            Fault::EndlessGetResponse => {
                self.endless = true;
                Reply::Response(vec![0x61, 0x00])
            }
            Fault::TruncateData(n) => {
                let full = self.full_response(apdu);
                let (data, _) = split(&full);
                let r = data.get(..n).unwrap_or(data).to_vec();
                Reply::Response(self.chunked(r, [0x90, 0x00]))
            }
            Fault::BrokenTlv => {
                let full = self.full_response(apdu);
                let (data, sw) = split(&full);
                let mut r = data.to_vec();
                // The first element's length: after a one- or multi-byte tag.
                let at = if r.first().is_some_and(|t| t & 0x1F == 0x1F) {
                    3
                } else {
                    1
                };
                let len_bytes = match r.get(at) {
                    Some(0x81) => 2,
                    Some(0x82) => 3,
                    Some(_) => 1,
                    None => 0,
                };
                if len_bytes == 0 {
                    r = vec![0x53, 0x82, 0xFF, 0xFF, 0x70];
                } else {
                    r.splice(at..at + len_bytes, [0x82, 0xFF, 0xFF]);
                }
                let sw = [
                    sw.first().copied().unwrap_or(0x90),
                    sw.get(1).copied().unwrap_or(0),
                ];
                Reply::Response(self.chunked(r, sw))
            }
            Fault::CorruptData => {
                let full = self.full_response(apdu);
                let (data, sw) = split(&full);
                let mut r = data.to_vec();
                let mid = r.len() / 2;
                if let Some(b) = r.get_mut(mid) {
                    *b ^= 0x5A;
                }
                let sw = [
                    sw.first().copied().unwrap_or(0x90),
                    sw.get(1).copied().unwrap_or(0),
                ];
                Reply::Response(self.chunked(r, sw))
            }
        }
    }
}

impl FaultyCard {
    /// Hands out `data` like a real card: up to 256 bytes, then `61 xx`.
    fn chunked(&mut self, data: Vec<u8>, sw: [u8; 2]) -> Vec<u8> {
        self.pending = data;
        self.pending_sw = sw;
        self.next_piece()
    }

    fn next_piece(&mut self) -> Vec<u8> {
        let n = self.pending.len().min(256);
        let mut r: Vec<u8> = self.pending.drain(..n).collect();
        match self.pending.len() {
            0 => r.extend_from_slice(&self.pending_sw),
            left => r.extend_from_slice(&[0x61, u8::try_from(left).unwrap_or(0)]),
        }
        r
    }

    /// The healthy answer with all its `61 xx` pieces, as one response.
    fn full_response(&mut self, apdu: &[u8]) -> Vec<u8> {
        let mut resp = self.inner.process(apdu);
        let mut data = Vec::new();
        for _ in 0..64 {
            let (d, sw) = split(&resp);
            data.extend_from_slice(d);
            if sw.first() != Some(&0x61) {
                data.extend_from_slice(sw);
                return data;
            }
            resp = self.inner.process(&[0x00, 0xC0, 0x00, 0x00, 0x00]);
        }
        data.extend_from_slice(&[0x6F, 0x00]);
        data
    }
}

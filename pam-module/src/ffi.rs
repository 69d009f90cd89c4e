//! The PAM entry points and the few libpam declarations they need: the only
//! unsafe code in the crate.
//!
//! Each `pam_sm_*` function wraps its body in [`logic::guarded`] (a panic
//! becomes `PAM_SYSTEM_ERR`; this needs `panic = "unwind"`, the default:
//! never build this crate with `panic = "abort"`), turns the raw handle and arguments into a
//! [`PamHandle`] implementing [`PamOps`], and calls [`logic::run`].
//!
//! The declarations follow Linux-PAM's `<security/pam_modules.h>`,
//! `<security/pam_appl.h>` and `<security/pam_ext.h>`. The conversation is
//! always called with one message at a time, which sidesteps the
//! disagreement between Linux-PAM and Solaris on the layout of the message
//! array.

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::ptr;

use zeroize::{Zeroize, Zeroizing};

use crate::codes::*;
use crate::logic::{self, Op};
use crate::ops::{Answer, Item, Level, PamOps, SocketConnect, Style};

/// Linux-PAM's opaque `pam_handle_t`.
#[repr(C)]
pub struct PamHandleRaw {
    _private: [u8; 0],
}

/// `struct pam_message`.
#[repr(C)]
struct PamMessage {
    msg_style: c_int,
    msg: *const c_char,
}

/// `struct pam_response`.
#[repr(C)]
pub struct PamResponse {
    resp: *mut c_char,
    resp_retcode: c_int,
}

/// The conversation function's type.
type ConvFn = unsafe extern "C" fn(
    num_msg: c_int,
    msg: *mut *const PamMessage,
    resp: *mut *mut PamResponse,
    appdata_ptr: *mut c_void,
) -> c_int;

/// `struct pam_conv`.
#[repr(C)]
pub struct PamConv {
    conv: Option<ConvFn>,
    appdata_ptr: *mut c_void,
}

#[link(name = "pam")]
extern "C" {
    fn pam_get_user(
        pamh: *mut PamHandleRaw,
        user: *mut *const c_char,
        prompt: *const c_char,
    ) -> c_int;
    fn pam_get_item(pamh: *const PamHandleRaw, item_type: c_int, item: *mut *const c_void)
        -> c_int;
    fn pam_getenv(pamh: *mut PamHandleRaw, name: *const c_char) -> *const c_char;
    fn pam_syslog(pamh: *const PamHandleRaw, priority: c_int, fmt: *const c_char, ...);
}

/// A live PAM handle, as [`PamOps`].
struct PamHandle {
    pamh: *mut PamHandleRaw,
}

/// Copies a C string's bytes (without the NUL).
///
/// # Safety
///
/// `ptr` is NULL or points to a NUL-terminated string that stays valid for
/// the duration of the call.
unsafe fn copy_c_string(ptr: *const c_char) -> Option<Vec<u8>> {
    if ptr.is_null() {
        None
    } else {
        // SAFETY: non-NULL, NUL-terminated and valid per this function's
        // contract; the bytes are copied before returning.
        Some(unsafe { CStr::from_ptr(ptr) }.to_bytes().to_vec())
    }
}

impl PamOps for PamHandle {
    fn user(&mut self) -> Result<Option<Vec<u8>>, PamCode> {
        let mut user: *const c_char = ptr::null();
        // SAFETY: `self.pamh` is the non-NULL handle libpam passed to the
        // entry point; `user` is a valid place for the result; a NULL prompt
        // asks libpam for its default prompt.
        let rc = unsafe { pam_get_user(self.pamh, &mut user, ptr::null()) };
        if rc != PAM_SUCCESS {
            return Err(rc);
        }
        // SAFETY: on success libpam returns NULL or its own NUL-terminated
        // copy of PAM_USER, valid until the item changes (not during this
        // call).
        Ok(unsafe { copy_c_string(user) })
    }

    fn item(&self, item: Item) -> Result<Option<Vec<u8>>, PamCode> {
        let item_type = match item {
            Item::Service => PAM_SERVICE,
            Item::Tty => PAM_TTY,
            Item::Rhost => PAM_RHOST,
        };
        let mut value: *const c_void = ptr::null();
        // SAFETY: valid handle (see `user`); `value` is a valid place; the
        // item types asked for are all strings.
        let rc = unsafe { pam_get_item(self.pamh, item_type, &mut value) };
        if rc != PAM_SUCCESS {
            return Err(rc);
        }
        // SAFETY: string items are NULL or NUL-terminated strings owned by
        // libpam, valid during this call.
        Ok(unsafe { copy_c_string(value.cast::<c_char>()) })
    }

    fn pam_env(&self, name: &str) -> Option<Vec<u8>> {
        let name = CString::new(name).ok()?;
        // SAFETY: valid handle; `name` is a NUL-terminated string that
        // outlives the call.
        let value = unsafe { pam_getenv(self.pamh, name.as_ptr()) };
        // SAFETY: pam_getenv returns NULL or a NUL-terminated string owned
        // by libpam, valid during this call.
        unsafe { copy_c_string(value) }
    }

    fn process_env(&self, name: &str) -> Option<Vec<u8>> {
        use std::os::unix::ffi::OsStringExt;
        std::env::var_os(name).map(OsStringExt::into_vec)
    }

    fn converse(&mut self, style: Style, text: &str) -> Result<Answer, PamCode> {
        let mut conv: *const c_void = ptr::null();
        // SAFETY: valid handle; `conv` is a valid place.
        let rc = unsafe { pam_get_item(self.pamh, PAM_CONV, &mut conv) };
        if rc != PAM_SUCCESS {
            return Err(rc);
        }
        // SAFETY: the PAM_CONV item is NULL or points to the application's
        // `struct pam_conv`, which stays valid for the life of the handle.
        let conv = unsafe { conv.cast::<PamConv>().as_ref() };
        match conv {
            Some(conv) => converse_with(conv, style, text),
            None => Err(PAM_CONV_ERR),
        }
    }

    fn log(&self, level: Level, message: &str) {
        let priority = match level {
            Level::Err => libc::LOG_ERR,
            Level::Warning => libc::LOG_WARNING,
            Level::Notice => libc::LOG_NOTICE,
            Level::Info => libc::LOG_INFO,
            Level::Debug => libc::LOG_DEBUG,
        };
        // The logic removes control characters (and so NULs) already.
        let Ok(message) = CString::new(message) else {
            return;
        };
        // SAFETY: valid handle; a constant "%s" format with exactly one
        // NUL-terminated string argument, so the message is never read as
        // a format.
        unsafe { pam_syslog(self.pamh, priority, c"%s".as_ptr(), message.as_ptr()) };
    }
}

/// Sends one message through `conv` and takes its answer: the C string is
/// copied into a zeroizing buffer, then wiped and freed, and so is the
/// response array, on every path.
fn converse_with(conv: &PamConv, style: Style, text: &str) -> Result<Answer, PamCode> {
    let Some(func) = conv.conv else {
        return Err(PAM_CONV_ERR);
    };
    let Ok(text) = CString::new(text) else {
        return Err(PAM_CONV_ERR);
    };
    let msg_style = match style {
        Style::EchoOff => PAM_PROMPT_ECHO_OFF,
        Style::EchoOn => PAM_PROMPT_ECHO_ON,
        Style::ErrorMsg => PAM_ERROR_MSG,
        Style::TextInfo => PAM_TEXT_INFO,
    };
    let message = PamMessage {
        msg_style,
        msg: text.as_ptr(),
    };
    let mut messages: [*const PamMessage; 1] = [&message];
    let mut resp: *mut PamResponse = ptr::null_mut();
    // SAFETY: `func` is the application's conversation function, called as
    // libpam documents: one message, a valid message array and text that
    // outlive the call, a valid place for the response array, and the
    // application's own appdata pointer.
    let rc = unsafe { func(1, messages.as_mut_ptr(), &mut resp, conv.appdata_ptr) };
    // SAFETY: `resp` is NULL or an array of one `pam_response` allocated
    // with malloc by the conversation function, now ours to free.
    let answer = unsafe { take_response(resp) };
    if rc != PAM_SUCCESS {
        // A response given with a failure is wiped and dropped with `answer`.
        return Err(never_success(rc));
    }
    Ok(answer)
}

/// A conversation error code that is never `PAM_SUCCESS`.
fn never_success(rc: c_int) -> c_int {
    if rc == PAM_SUCCESS {
        PAM_CONV_ERR
    } else {
        rc
    }
}

/// Takes the one response of a conversation: copies its string into a
/// zeroizing buffer, wipes and frees the string, and frees the array.
///
/// # Safety
///
/// `resp` is NULL or points to one `pam_response` allocated with `malloc`,
/// whose `resp` is NULL or a `malloc`ed NUL-terminated string, and nothing
/// else uses them afterwards.
unsafe fn take_response(resp: *mut PamResponse) -> Answer {
    if resp.is_null() {
        return Answer::NoResponse;
    }
    // SAFETY: non-NULL and pointing to one response per the contract.
    let string = unsafe { (*resp).resp };
    let answer = if string.is_null() {
        Answer::NullString
    } else {
        // SAFETY: a NUL-terminated, writable string per the contract.
        let copy = unsafe { copy_and_wipe(string) };
        // SAFETY: the string was allocated with malloc and is freed once.
        unsafe { libc::free(string.cast::<c_void>()) };
        Answer::Text(copy)
    };
    // SAFETY: the array was allocated with malloc and is freed once; its
    // string was freed above.
    unsafe { libc::free(resp.cast::<c_void>()) };
    answer
}

/// Copies a C string into a zeroizing buffer and wipes the original.
///
/// # Safety
///
/// `string` is a non-NULL, NUL-terminated string whose bytes this code may
/// write.
unsafe fn copy_and_wipe(string: *mut c_char) -> Zeroizing<Vec<u8>> {
    // SAFETY: NUL-terminated per the contract.
    let len = unsafe { CStr::from_ptr(string) }.to_bytes().len();
    // SAFETY: the `len` bytes before the NUL are valid and writable per the
    // contract, and nothing else refers to them during this call.
    let bytes = unsafe { std::slice::from_raw_parts_mut(string.cast::<u8>(), len) };
    let copy = Zeroizing::new(bytes.to_vec());
    bytes.zeroize();
    copy
}

/// Copies the module arguments.
///
/// # Safety
///
/// `argv` is NULL or points to `argc` NUL-terminated strings, as libpam
/// passes them.
unsafe fn read_args(argc: c_int, argv: *const *const c_char) -> Option<Vec<Vec<u8>>> {
    let count = usize::try_from(argc).ok()?;
    if count == 0 {
        return Some(Vec::new());
    }
    if argv.is_null() {
        return None;
    }
    let mut args = Vec::with_capacity(count);
    for i in 0..count {
        // SAFETY: `argv` has `argc` entries per the contract.
        let arg = unsafe { *argv.add(i) };
        // SAFETY: each entry is NULL or a NUL-terminated string.
        args.push(unsafe { copy_c_string(arg) }?);
    }
    Some(args)
}

/// The body of every entry point.
fn entry(
    op: Op,
    pamh: *mut PamHandleRaw,
    flags: c_int,
    argc: c_int,
    argv: *const *const c_char,
) -> c_int {
    if pamh.is_null() {
        return PAM_SYSTEM_ERR;
    }
    logic::guarded(
        || {
            // SAFETY: libpam passes `argc` arguments in `argv`.
            let Some(args) = (unsafe { read_args(argc, argv) }) else {
                return PAM_SERVICE_ERR;
            };
            let mut handle = PamHandle { pamh };
            logic::run(op, &mut handle, flags, &args, &SocketConnect)
        },
        || {
            let handle = PamHandle { pamh };
            handle.log(
                Level::Err,
                &format!(
                    "{}: refused (PAM_SYSTEM_ERR): internal error (panic)",
                    op.name()
                ),
            );
        },
    )
}

/// `pam_sm_authenticate`: asks the agent to authenticate `PAM_USER`.
///
/// # Safety
///
/// Called by libpam with a valid handle and `argc` arguments in `argv`.
#[no_mangle]
pub unsafe extern "C" fn pam_sm_authenticate(
    pamh: *mut PamHandleRaw,
    flags: c_int,
    argc: c_int,
    argv: *const *const c_char,
) -> c_int {
    entry(Op::Authenticate, pamh, flags, argc, argv)
}

/// `pam_sm_setcred`: succeeds for a valid credential action (the module
/// holds no credentials).
///
/// # Safety
///
/// As [`pam_sm_authenticate`].
#[no_mangle]
pub unsafe extern "C" fn pam_sm_setcred(
    pamh: *mut PamHandleRaw,
    flags: c_int,
    argc: c_int,
    argv: *const *const c_char,
) -> c_int {
    entry(Op::SetCred, pamh, flags, argc, argv)
}

/// `pam_sm_acct_mgmt`: asks the agent whether the user may use this
/// workstation now.
///
/// # Safety
///
/// As [`pam_sm_authenticate`].
#[no_mangle]
pub unsafe extern "C" fn pam_sm_acct_mgmt(
    pamh: *mut PamHandleRaw,
    flags: c_int,
    argc: c_int,
    argv: *const *const c_char,
) -> c_int {
    entry(Op::Account, pamh, flags, argc, argv)
}

/// `pam_sm_open_session`: tells the agent the session opened (it binds the
/// card for tap-out).
///
/// # Safety
///
/// As [`pam_sm_authenticate`].
#[no_mangle]
pub unsafe extern "C" fn pam_sm_open_session(
    pamh: *mut PamHandleRaw,
    flags: c_int,
    argc: c_int,
    argv: *const *const c_char,
) -> c_int {
    entry(Op::OpenSession, pamh, flags, argc, argv)
}

/// `pam_sm_close_session`: tells the agent the session closed.
///
/// # Safety
///
/// As [`pam_sm_authenticate`].
#[no_mangle]
pub unsafe extern "C" fn pam_sm_close_session(
    pamh: *mut PamHandleRaw,
    flags: c_int,
    argc: c_int,
    argv: *const *const c_char,
) -> c_int {
    entry(Op::CloseSession, pamh, flags, argc, argv)
}

#[cfg(test)]
mod tests {
    //! The raw conversation handling, with conversation functions written
    //! here (no libpam needed).
    use super::*;
    use std::cell::Cell;

    thread_local! {
        /// What the test conversation functions saw.
        static SEEN_STYLE: Cell<c_int> = const { Cell::new(0) };
    }

    /// Allocates a response array of one with `malloc`, holding `answer`
    /// (NULL when `None`).
    fn malloc_response(answer: Option<&CStr>) -> *mut PamResponse {
        // SAFETY: test helper; allocations are checked and handed to the
        // code under test, which frees them.
        unsafe {
            let resp = libc::calloc(1, std::mem::size_of::<PamResponse>()).cast::<PamResponse>();
            assert!(!resp.is_null());
            (*resp).resp = match answer {
                Some(a) => libc::strdup(a.as_ptr()),
                None => ptr::null_mut(),
            };
            resp
        }
    }

    unsafe extern "C" fn conv_answers_1234(
        num: c_int,
        msg: *mut *const PamMessage,
        resp: *mut *mut PamResponse,
        _: *mut c_void,
    ) -> c_int {
        assert_eq!(num, 1);
        // SAFETY: one valid message, as converse_with passes.
        let style = unsafe { (**msg).msg_style };
        SEEN_STYLE.with(|s| s.set(style));
        // SAFETY: `resp` is a valid place.
        unsafe { *resp = malloc_response(Some(c"1234")) };
        PAM_SUCCESS
    }

    unsafe extern "C" fn conv_null_string(
        _: c_int,
        _: *mut *const PamMessage,
        resp: *mut *mut PamResponse,
        _: *mut c_void,
    ) -> c_int {
        // SAFETY: `resp` is a valid place.
        unsafe { *resp = malloc_response(None) };
        PAM_SUCCESS
    }

    unsafe extern "C" fn conv_no_array(
        _: c_int,
        _: *mut *const PamMessage,
        _: *mut *mut PamResponse,
        _: *mut c_void,
    ) -> c_int {
        PAM_SUCCESS
    }

    unsafe extern "C" fn conv_fails_with_response(
        _: c_int,
        _: *mut *const PamMessage,
        resp: *mut *mut PamResponse,
        _: *mut c_void,
    ) -> c_int {
        // A careless application: an error, and an answer anyway.
        // SAFETY: `resp` is a valid place.
        unsafe { *resp = malloc_response(Some(c"9999")) };
        PAM_CONV_ERR
    }

    fn conv(f: ConvFn) -> PamConv {
        PamConv {
            conv: Some(f),
            appdata_ptr: ptr::null_mut(),
        }
    }

    #[test]
    fn answer_is_copied_and_style_passed() {
        for (style, expected) in [
            (Style::EchoOff, PAM_PROMPT_ECHO_OFF),
            (Style::EchoOn, PAM_PROMPT_ECHO_ON),
            (Style::ErrorMsg, PAM_ERROR_MSG),
            (Style::TextInfo, PAM_TEXT_INFO),
        ] {
            match converse_with(&conv(conv_answers_1234), style, "PIN: ") {
                Ok(Answer::Text(bytes)) => assert_eq!(bytes.as_slice(), b"1234"),
                other => panic!("{other:?}"),
            }
            assert_eq!(SEEN_STYLE.with(Cell::get), expected);
        }
    }

    #[test]
    fn null_answer_string_is_reported() {
        assert!(matches!(
            converse_with(&conv(conv_null_string), Style::EchoOff, "PIN: "),
            Ok(Answer::NullString)
        ));
    }

    #[test]
    fn null_answer_array_is_reported() {
        assert!(matches!(
            converse_with(&conv(conv_no_array), Style::EchoOff, "PIN: "),
            Ok(Answer::NoResponse)
        ));
    }

    #[test]
    fn conversation_failure_is_an_error_even_with_an_answer() {
        assert!(matches!(
            converse_with(&conv(conv_fails_with_response), Style::EchoOff, "PIN: "),
            Err(PAM_CONV_ERR)
        ));
    }

    #[test]
    fn missing_conversation_function_is_an_error() {
        let none = PamConv {
            conv: None,
            appdata_ptr: ptr::null_mut(),
        };
        assert!(matches!(
            converse_with(&none, Style::EchoOff, "PIN: "),
            Err(PAM_CONV_ERR)
        ));
    }

    #[test]
    fn answer_buffer_is_wiped() {
        // SAFETY: a malloc'ed copy of a valid string, inspected and freed
        // here.
        unsafe {
            let string = libc::strdup(c"493817".as_ptr());
            assert!(!string.is_null());
            let copy = copy_and_wipe(string);
            assert_eq!(copy.as_slice(), b"493817");
            let wiped = std::slice::from_raw_parts(string.cast::<u8>(), 6);
            assert!(wiped.iter().all(|&b| b == 0), "{wiped:?}");
            libc::free(string.cast::<c_void>());
        }
    }

    #[test]
    fn arguments_are_read() {
        let a = c"socket=/run/x.sock";
        let b = c"debug";
        let argv = [a.as_ptr(), b.as_ptr()];
        // SAFETY: two valid strings.
        let args = unsafe { read_args(2, argv.as_ptr()) }.unwrap();
        assert_eq!(
            args,
            vec![b"socket=/run/x.sock".to_vec(), b"debug".to_vec()]
        );
        // SAFETY: no arguments are read.
        assert_eq!(unsafe { read_args(0, ptr::null()) }, Some(vec![]));
    }

    #[test]
    fn null_or_negative_arguments_fail_closed() {
        // SAFETY: NULL argv is checked before use.
        assert_eq!(unsafe { read_args(1, ptr::null()) }, None);
        // SAFETY: a negative count is refused before any read.
        assert_eq!(unsafe { read_args(-1, ptr::null()) }, None);
        let argv = [ptr::null::<c_char>()];
        // SAFETY: one NULL entry, checked before use.
        assert_eq!(unsafe { read_args(1, argv.as_ptr()) }, None);
    }

    #[test]
    fn null_handle_fails_closed() {
        for op in Op::ALL {
            let code = entry(op, ptr::null_mut(), 0, 0, ptr::null());
            assert_eq!(code, PAM_SYSTEM_ERR, "{op:?}");
        }
    }
}

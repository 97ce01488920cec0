//! A small disk for one test: a tmpfs mounted in a mount namespace of the test's own thread, so
//! the binary it starts sees it and nothing else does; it goes away with the test's process.

use std::ffi::CString;
use std::path::Path;

/// Mounts a tmpfs of `kib` KiB at `dir` (which must exist), for this thread and the processes
/// it starts. Needs root, as the suite runs in CI (the test services are installed as root).
#[allow(unsafe_code)]
pub fn mount(dir: &Path, kib: u32) {
    let c = |s: &str| CString::new(s).unwrap();
    let target = c(dir.to_str().unwrap());
    let options = c(&format!("size={kib}k,mode=0700"));
    // SAFETY: plain system calls with valid C strings; unshare affects this thread alone, and
    // the mounts are made private first so none reaches the rest of the machine.
    unsafe {
        assert_eq!(
            libc::unshare(libc::CLONE_NEWNS),
            0,
            "a test of a full disk needs its own mount namespace (run the suite as root): {}",
            std::io::Error::last_os_error()
        );
        assert_eq!(
            libc::mount(
                std::ptr::null(),
                c("/").as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ),
            0,
            "{}",
            std::io::Error::last_os_error()
        );
        assert_eq!(
            libc::mount(
                c("tmpfs").as_ptr(),
                target.as_ptr(),
                c("tmpfs").as_ptr(),
                0,
                options.as_ptr().cast(),
            ),
            0,
            "{}",
            std::io::Error::last_os_error()
        );
    }
}

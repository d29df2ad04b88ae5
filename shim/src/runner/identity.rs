//! A container's `process.user` for its guest: the thread that runs the guest (and the threads
//! it starts) act as that user, so that what the guest opens is opened as runc would open it.

/// A user, its group and its supplementary groups, as a container's spec names them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The user id.
    pub uid: u32,
    /// The group id.
    pub gid: u32,
    /// Supplementary groups.
    pub groups: Vec<u32>,
}

impl Identity {
    /// Makes the calling thread (only it: the kernel keeps credentials per thread) act as
    /// this user, for good: groups first, then the group, then the user, after which it
    /// cannot go back. Root's file capabilities leave the thread with its user id.
    ///
    /// A thread that is this user already (one started by a thread that took it: a blocking
    /// pool grows from the guest's own thread, and inherits its credentials) is left as it is:
    /// it could not call `setgroups` again, having dropped the right to.
    pub(super) fn become_on_this_thread(&self) -> std::io::Result<()> {
        use rustix::fs::{Gid, Uid};
        use rustix::thread::{set_thread_groups, set_thread_res_gid, set_thread_res_uid};
        if self.is_this_thread()? {
            return Ok(());
        }
        let groups: Vec<Gid> = self.groups.iter().map(|g| Gid::from_raw(*g)).collect();
        set_thread_groups(&groups)?;
        let gid = Gid::from_raw(self.gid);
        set_thread_res_gid(gid, gid, gid)?;
        let uid = Uid::from_raw(self.uid);
        set_thread_res_uid(uid, uid, uid)?;
        Ok(())
    }

    /// Whether the calling thread acts as this user already: its real, effective and saved
    /// ids are the user's and group's, and its supplementary groups are these. (The raw
    /// system calls answer for the calling thread, whose credentials the kernel keeps apart.)
    fn is_this_thread(&self) -> std::io::Result<bool> {
        let ids = thread_ids()?;
        let mut groups: Vec<u32> = rustix::process::getgroups()?
            .iter()
            .map(|g| g.as_raw())
            .collect();
        let mut wanted = self.groups.clone();
        groups.sort_unstable();
        groups.dedup();
        wanted.sort_unstable();
        wanted.dedup();
        Ok(ids == ([self.uid; 3], [self.gid; 3]) && groups == wanted)
    }
}

/// The calling thread's real, effective and saved user ids, then group ids.
///
/// Asked of the kernel, never read from `/proc/thread-self/status`: a thread is started when
/// the guest's blocking pool grows, and a guest that holds every descriptor the process may
/// open would leave it no descriptor to read a file with.
fn thread_ids() -> std::io::Result<([u32; 3], [u32; 3])> {
    let mut uid: [libc::uid_t; 3] = [0; 3];
    let mut gid: [libc::gid_t; 3] = [0; 3];
    // `getresuid`/`getresgid` answer for the calling thread (the kernel keeps credentials per
    // thread; glibc broadcasts only the calls that set them); rustix has no wrapper.
    #[allow(
        unsafe_code,
        reason = "getresuid and getresgid write three ids each into the arrays given"
    )]
    // SAFETY: each pointer is to a live, writable `uid_t`/`gid_t` of this frame.
    let failed = unsafe {
        let [ru, eu, su] = &mut uid;
        let [rg, eg, sg] = &mut gid;
        libc::getresuid(ru, eu, su) != 0 || libc::getresgid(rg, eg, sg) != 0
    };
    if failed {
        return Err(std::io::Error::last_os_error());
    }
    Ok((uid, gid))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn this_thread() -> Identity {
        let (uid, gid) = thread_ids().unwrap();
        Identity {
            uid: uid[0],
            gid: gid[0],
            groups: rustix::process::getgroups()
                .unwrap()
                .iter()
                .map(|g| g.as_raw())
                .collect(),
        }
    }

    #[test]
    fn a_thread_that_is_the_user_already_is_left_as_it_is() {
        // What a blocking-pool thread born of the guest's thread finds: it is the user, and
        // taking the user again (setgroups needs a right it no longer has) is not tried.
        let me = this_thread();
        assert!(me.is_this_thread().unwrap());
        me.become_on_this_thread().unwrap();
        let mut reordered = me.clone();
        reordered.groups.reverse();
        assert!(reordered.is_this_thread().unwrap());
        let other = Identity {
            uid: me.uid.wrapping_add(1),
            ..me.clone()
        };
        assert!(!other.is_this_thread().unwrap());
        let more_groups = Identity {
            groups: me.groups.iter().copied().chain([4_000_000]).collect(),
            ..me
        };
        assert!(!more_groups.is_this_thread().unwrap());
    }
}

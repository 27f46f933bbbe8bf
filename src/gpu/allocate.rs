//! Which GPU devices each session on one node gets.
//!
//! A session asks for `gpus=N` (N whole GPUs), for `gpus=N mig="1g.10gb"` (N MIG instances of that profile),
//! or for exact devices with `gpu-devices="0,3"` (each written as an index or a UUID). A node's devices are
//! known from its inventory (NVML: every whole GPU and every MIG instance, with its UUID) or, offline, only
//! from its declared `gpus N` (devices `0` to `N-1`). A GPU in MIG mode is listed by its instances alone, so it
//! is never handed out whole. A device that something bai does not own uses is busy: it is never handed out.
//!
//! The rule, applied to all of a node's sessions at once. Sessions are taken in name order whatever order
//! they are declared in, so the outcome depends on the devices and the requests alone.
//!
//! 1. **Pinned sessions first**, in name order. Each pin names a device: the one with exactly that id, or else,
//!    for a decimal pin, the whole GPU with that index. The session is given the devices' ids, so `0` becomes
//!    the UUID of GPU 0 once the inventory is known. Offline, a UUID pin cannot be checked and is granted as
//!    written. A pinned session is refused, and given nothing, when one of its pins names no device on the
//!    node, a busy device, or a device an earlier pinned session holds.
//! 2. **Running sessions keep their devices.** A session that holds devices now keeps exactly those when they
//!    are still what it asks for (as many as it asks, all of the kind it asks: whole GPUs, or MIG instances of
//!    its profile), all are still on the node, none is busy and no pinned session took one. So adding, removing
//!    or replacing other sessions never moves a running one; only a pin on one of its devices can.
//! 3. **A running session that now asks for more or fewer** keeps the devices of its own that are still free
//!    (the lowest, as many as it asks), and gets the rest before any new session is placed, on the locality
//!    group of the devices it keeps when that group can hold them, else as in 4.
//! 4. **Every other session is placed**, in name order, on free devices of the kind it asks (free: not busy,
//!    not given to another session). Devices are kept together on one locality group (NUMA node) when one can
//!    hold them: of the groups with enough free devices, the one whose lowest free device has the lowest index
//!    gives its lowest-index free devices. Devices whose locality is unknown count as one group. When no one
//!    group can hold the request, it gets the lowest-index free devices of the node. A session asking for more
//!    devices than are free is refused, and the refusal lists the busy devices of that kind, which are why.
//!    Offline, MIG instances are unknown, so a MIG request waits for the node's inventory.
//! 5. A session asking for no GPU is given none; it is never refused.
//!
//! A session declared twice with different requests is refused. Devices are listed in index order (then id);
//! a UUID granted as written, whose index is unknown, comes after them.

use std::collections::{BTreeMap, HashMap, HashSet};

/// One device a session can be given: a whole GPU, or a MIG instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    /// What the container is given and the spec records: the UUID ("GPU-…", "MIG-…") when the node's
    /// inventory is known; the index as a decimal string ("0", "1", …) when only the declared count is.
    pub id: String,
    /// The NVML index of the GPU (of its parent GPU for a MIG instance).
    pub index: u32,
    /// The MIG profile ("1g.10gb") for a MIG instance; None for a whole GPU.
    pub mig_profile: Option<String>,
    /// A locality group (the NUMA node) when known: a session's devices are kept in one group when one can
    /// hold them.
    pub group: Option<u32>,
    /// Why it may not be handed out (something bai does not own uses it: "used by process 4242, not in a bai
    /// container"); None when free.
    pub busy: Option<String>,
}

/// What a session asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Want {
    /// `gpus=N`: N whole GPUs.
    Count(u32),
    /// `gpu-devices="0,3"`: exactly these devices, each written as an index ("0") or a UUID ("GPU-…", "MIG-…").
    Pinned(Vec<String>),
    /// `gpus=N mig="1g.10gb"`: N MIG instances of that profile.
    Mig { profile: String, count: u32 },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub session: String,
    pub want: Want,
    /// The devices the session's container holds now (ids as recorded on it); empty when it has none or does
    /// not exist.
    pub current: Vec<String>,
}

/// What the node's devices are known from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Known {
    /// The node's inventory (NVML): every device is listed with its UUID.
    Inventory,
    /// Only the declared `gpus N` (offline plans, snapshots without inventory): devices are "0".."N-1"; a
    /// UUID pin cannot be checked and is granted as written; MIG requests cannot be placed yet.
    Declared,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// One sentence for the plan: "needs 4 GPUs; 2 are free on the node", "pinned device 3 is not on the node",
    /// "pinned device GPU-ab… is used by process 4242, not in a bai container", "pinned device 0 is pinned by
    /// session `a` too", "MIG instances of profile 1g.10gb are placed when the node's inventory is known".
    pub reason: String,
    /// Devices left out because something else uses them, with why (id, reason), sorted by index then id: the
    /// plan lists them.
    pub busy: Vec<(String, String)>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Allocation {
    /// Session → its devices, in index order (then id), for every request that could be placed (a `Count(0)`
    /// request gets an empty list).
    pub granted: BTreeMap<String, Vec<String>>,
    /// Session → why it could not be placed.
    pub refused: BTreeMap<String, Refusal>,
}

/// The devices each session on one node gets, by the rule in this module's documentation.
pub fn allocate(devices: &[Device], requests: &[Request], known: Known) -> Allocation {
    let node = Node::new(devices);
    let mut out = Allocation::default();
    let requests = one_each(requests, &mut out.refused);
    // Device id → the session given it. Pins granted as written (offline UUIDs) are held too, so that two
    // sessions pinning the same UUID conflict offline as they will once it can be checked.
    let mut held: HashMap<&str, &str> = HashMap::new();

    for (&session, request) in &requests {
        let Want::Pinned(pins) = &request.want else { continue };
        match node.pin(pins, known, &held) {
            Ok(ids) => {
                held.extend(ids.iter().map(|&id| (id, session)));
                out.granted.insert(session.to_owned(), ids.into_iter().map(str::to_owned).collect());
            }
            Err(refusal) => {
                out.refused.insert(session.to_owned(), refusal);
            }
        }
    }

    let mut unplaced = Vec::new();
    for (&session, &request) in &requests {
        let Some((count, profile)) = asked(&request.want) else { continue };
        let kept = if request.current.is_empty() { None } else { node.keep(count, profile, &request.current, &held) };
        match kept {
            Some(positions) => node.grant(session, &positions, &mut held, &mut out.granted),
            None => unplaced.push((session, count, profile)),
        }
    }

    // A running session that now asks for more or fewer devices keeps those of its own still free, before
    // any new session is placed.
    let mut partly: HashMap<&str, Vec<usize>> = HashMap::new();
    for &(session, count, profile) in &unplaced {
        let Some(request) = requests.get(session) else { continue };
        let mut kept = node.still_free(profile, &request.current, &held);
        kept.truncate(count as usize);
        if !kept.is_empty() {
            held.extend(kept.iter().map(|&at| (node.devices[at].id.as_str(), session)));
            partly.insert(session, kept);
        }
    }

    // Running sessions that grow are completed before new sessions are placed, near what they keep.
    unplaced.sort_by_key(|(session, _, _)| !partly.contains_key(session));
    for (session, count, profile) in unplaced {
        if count == 0 {
            out.granted.insert(session.to_owned(), Vec::new());
            continue;
        }
        if let (Some(profile), Known::Declared) = (profile, known) {
            let reason = format!("MIG instances of profile {profile} are placed when the node's inventory is known");
            out.refused.insert(session.to_owned(), Refusal { reason, busy: Vec::new() });
            continue;
        }
        let kept = partly.remove(session).unwrap_or_default();
        let more = count as usize - kept.len();
        let near = kept.first().and_then(|&at| node.devices[at].group);
        match node.place(more as u32, profile, &held, near) {
            Some(mut positions) => {
                positions.extend(kept);
                positions.sort_unstable();
                node.grant(session, &positions, &mut held, &mut out.granted);
            }
            None => {
                // Its own devices go back: the refusal counts them free, and later sessions may have them.
                for at in kept {
                    held.remove(node.devices[at].id.as_str());
                }
                out.refused.insert(session.to_owned(), node.short(count, profile, &held));
            }
        }
    }
    out
}

/// The requests by session name, which gives the order they are served in. A name declared twice
/// differently cannot be served either way without depending on declaration order, so it is refused.
fn one_each<'a>(requests: &'a [Request], refused: &mut BTreeMap<String, Refusal>) -> BTreeMap<&'a str, &'a Request> {
    let mut by_name: BTreeMap<&str, Option<&Request>> = BTreeMap::new();
    for request in requests {
        by_name
            .entry(&request.session)
            .and_modify(|seen| {
                if seen.is_some_and(|first| first != request) {
                    *seen = None;
                }
            })
            .or_insert(Some(request));
    }
    let mut one = BTreeMap::new();
    for (session, request) in by_name {
        match request {
            Some(request) => {
                one.insert(session, request);
            }
            None => {
                let reason = "the session is declared more than once, with different GPU requests".to_owned();
                refused.insert(session.to_owned(), Refusal { reason, busy: Vec::new() });
            }
        }
    }
    one
}

/// How many devices a request takes and of which kind: whole GPUs (no profile) or MIG instances of a profile.
/// None for pins, which name their devices instead.
fn asked(want: &Want) -> Option<(u32, Option<&str>)> {
    match want {
        Want::Count(count) => Some((*count, None)),
        Want::Mig { profile, count } => Some((*count, Some(profile))),
        Want::Pinned(_) => None,
    }
}

fn decimal(pin: &str) -> Option<u32> {
    if pin.is_empty() || !pin.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    pin.parse().ok()
}

/// The node's devices, each id once (the first listed), in index order then id; a device is named by its
/// position here, so that positions sort as devices are listed.
struct Node<'a> {
    devices: Vec<&'a Device>,
    by_id: HashMap<&'a str, usize>,
}

impl<'a> Node<'a> {
    fn new(devices: &'a [Device]) -> Self {
        let mut seen = HashSet::new();
        let mut devices: Vec<&Device> = devices.iter().filter(|d| seen.insert(d.id.as_str())).collect();
        devices.sort_by(|a, b| (a.index, &a.id).cmp(&(b.index, &b.id)));
        let by_id = devices.iter().enumerate().map(|(at, d)| (d.id.as_str(), at)).collect();
        Node { devices, by_id }
    }

    /// The device a pin names: exactly its id, or else, written as an index, the whole GPU with that index.
    fn resolve(&self, pin: &str) -> Option<usize> {
        self.by_id.get(pin).copied().or_else(|| {
            let index = decimal(pin)?;
            self.devices.iter().position(|d| d.index == index && d.mig_profile.is_none())
        })
    }

    /// The ids a pinned session is given, in listing order, or why not.
    fn pin<'p>(&self, pins: &'p [String], known: Known, held: &HashMap<&str, &str>) -> Result<Vec<&'p str>, Refusal>
    where
        'a: 'p,
    {
        let refuse = |reason: String| Refusal { reason, busy: Vec::new() };
        let mut got: Vec<(Option<usize>, &str)> = Vec::with_capacity(pins.len());
        for pin in pins {
            let (at, id) = match self.resolve(pin) {
                Some(at) => (Some(at), self.devices[at].id.as_str()),
                None if known == Known::Declared && decimal(pin).is_none() => (None, pin.as_str()),
                None => return Err(refuse(format!("pinned device {pin} is not on the node"))),
            };
            if let Some(why) = at.and_then(|at| self.devices[at].busy.as_ref()) {
                let reason = format!("pinned device {pin} is {why}");
                return Err(Refusal { reason, busy: vec![(id.to_owned(), why.clone())] });
            }
            if let Some(other) = held.get(id) {
                return Err(refuse(format!("pinned device {pin} is pinned by session `{other}` too")));
            }
            if got.iter().any(|&(_, seen)| seen == id) {
                return Err(refuse(format!("pinned device {pin} is named twice")));
            }
            got.push((at, id));
        }
        got.sort_by_key(|&(at, id)| (at.is_none(), at, id));
        Ok(got.into_iter().map(|(_, id)| id).collect())
    }

    fn is_kind(&self, at: usize, profile: Option<&str>) -> bool {
        self.devices[at].mig_profile.as_deref() == profile
    }

    /// The devices a running session holds, when they still are exactly what it asks for and still its to have.
    fn keep(
        &self,
        count: u32,
        profile: Option<&str>,
        current: &[String],
        held: &HashMap<&str, &str>,
    ) -> Option<Vec<usize>> {
        if current.len() != count as usize {
            return None;
        }
        let mut kept = Vec::with_capacity(current.len());
        for id in current {
            let at = *self.by_id.get(id.as_str())?;
            if !self.is_kind(at, profile) || self.devices[at].busy.is_some() || held.contains_key(id.as_str()) {
                return None;
            }
            if kept.contains(&at) {
                return None;
            }
            kept.push(at);
        }
        kept.sort_unstable();
        Some(kept)
    }

    /// The devices of `current` that are still on the node, of the kind asked, and free, in listing order.
    fn still_free(&self, profile: Option<&str>, current: &[String], held: &HashMap<&str, &str>) -> Vec<usize> {
        let mut out: Vec<usize> = current
            .iter()
            .filter_map(|id| self.by_id.get(id.as_str()).copied())
            .filter(|&at| {
                let d = self.devices[at];
                self.is_kind(at, profile) && d.busy.is_none() && !held.contains_key(d.id.as_str())
            })
            .collect();
        out.sort_unstable();
        out.dedup();
        out
    }

    fn free(&self, profile: Option<&str>, held: &HashMap<&str, &str>) -> Vec<usize> {
        (0..self.devices.len())
            .filter(|&at| {
                let d = self.devices[at];
                self.is_kind(at, profile) && d.busy.is_none() && !held.contains_key(d.id.as_str())
            })
            .collect()
    }

    /// Free devices for a new request: one locality group's when one can hold them all (`near` first, the
    /// group of the devices a growing session keeps), else the node's lowest. None when too few are free.
    fn place(
        &self,
        count: u32,
        profile: Option<&str>,
        held: &HashMap<&str, &str>,
        near: Option<u32>,
    ) -> Option<Vec<usize>> {
        let count = count as usize;
        let free = self.free(profile, held);
        if free.len() < count {
            return None;
        }
        let mut groups: BTreeMap<Option<u32>, Vec<usize>> = BTreeMap::new();
        for &at in &free {
            groups.entry(self.devices[at].group).or_default().push(at);
        }
        let fits = |g: &&Vec<usize>| g.len() >= count;
        let group = near
            .and_then(|n| groups.get(&Some(n)).filter(fits))
            .or_else(|| groups.values().filter(fits).min_by_key(|g| g.first().copied()));
        Some(group.unwrap_or(&free).iter().take(count).copied().collect())
    }

    /// Why a request for more devices than are free is refused.
    fn short(&self, count: u32, profile: Option<&str>, held: &HashMap<&str, &str>) -> Refusal {
        let free = self.free(profile, held).len();
        let are = if free == 1 { "is" } else { "are" };
        let reason = match profile {
            None => format!("needs {count} GPU{}; {free} {are} free on the node", plural(count)),
            Some(profile) => {
                format!("needs {count} MIG instance{} of profile {profile}; {free} {are} free", plural(count))
            }
        };
        let busy = (0..self.devices.len())
            .filter(|&at| self.is_kind(at, profile))
            .filter_map(|at| self.devices[at].busy.as_ref().map(|why| (self.devices[at].id.clone(), why.clone())))
            .collect();
        Refusal { reason, busy }
    }

    fn grant<'s>(
        &self,
        session: &'s str,
        positions: &[usize],
        held: &mut HashMap<&'a str, &'s str>,
        granted: &mut BTreeMap<String, Vec<String>>,
    ) {
        let ids: Vec<&'a str> = positions.iter().map(|&at| self.devices[at].id.as_str()).collect();
        held.extend(ids.iter().map(|&id| (id, session)));
        granted.insert(session.to_owned(), ids.into_iter().map(str::to_owned).collect());
    }
}

fn plural(count: u32) -> &'static str {
    if count == 1 { "" } else { "s" }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use proptest::prelude::*;

    use super::*;

    const BUSY: &str = "used by process 4242, not in a bai container";

    fn gpu(index: u32) -> Device {
        Device { id: format!("GPU-{index}"), index, mig_profile: None, group: None, busy: None }
    }

    fn gpus(n: u32) -> Vec<Device> {
        (0..n).map(gpu).collect()
    }

    fn mig(index: u32, id: &str, profile: &str) -> Device {
        Device { id: id.to_owned(), index, mig_profile: Some(profile.to_owned()), group: None, busy: None }
    }

    fn busy(mut device: Device) -> Device {
        device.busy = Some(BUSY.to_owned());
        device
    }

    fn count(session: &str, n: u32) -> Request {
        Request { session: session.to_owned(), want: Want::Count(n), current: Vec::new() }
    }

    fn pinned(session: &str, pins: &[&str]) -> Request {
        let pins = pins.iter().map(|&p| p.to_owned()).collect();
        Request { session: session.to_owned(), want: Want::Pinned(pins), current: Vec::new() }
    }

    fn instances(session: &str, profile: &str, count: u32) -> Request {
        Request {
            session: session.to_owned(),
            want: Want::Mig { profile: profile.to_owned(), count },
            current: Vec::new(),
        }
    }

    fn holding(mut request: Request, current: &[&str]) -> Request {
        request.current = current.iter().map(|&c| c.to_owned()).collect();
        request
    }

    fn granted<'a>(allocation: &'a Allocation, session: &str) -> Vec<&'a str> {
        match allocation.granted.get(session) {
            Some(ids) => ids.iter().map(String::as_str).collect(),
            None => panic!("{session} is not granted: {allocation:?}"),
        }
    }

    fn refused<'a>(allocation: &'a Allocation, session: &str) -> &'a Refusal {
        match allocation.refused.get(session) {
            Some(refusal) => refusal,
            None => panic!("{session} is not refused: {allocation:?}"),
        }
    }

    #[test]
    fn the_lowest_free_gpus_are_given_in_name_order() {
        let devices = vec![gpu(3), busy(gpu(0)), gpu(2), gpu(1)];
        let got = allocate(&devices, &[count("b", 1), count("a", 2)], Known::Inventory);
        assert_eq!(granted(&got, "a"), ["GPU-1", "GPU-2"]);
        assert_eq!(granted(&got, "b"), ["GPU-3"]);
        assert!(got.refused.is_empty());
    }

    #[test]
    fn a_pin_by_index_is_given_as_the_uuid_and_a_pin_by_uuid_as_written() {
        let got = allocate(&gpus(4), &[pinned("a", &["2"]), pinned("b", &["GPU-0"]), count("c", 1)], Known::Inventory);
        assert_eq!(granted(&got, "a"), ["GPU-2"]);
        assert_eq!(granted(&got, "b"), ["GPU-0"]);
        // Pins are served before counts even when the count's name sorts first.
        let got = allocate(&gpus(2), &[count("a", 1), pinned("b", &["0"])], Known::Inventory);
        assert_eq!(granted(&got, "a"), ["GPU-1"]);
        assert_eq!(granted(&got, "b"), ["GPU-0"]);
        // Several pins come out in index order, whatever order they are written in.
        let got = allocate(&gpus(4), &[pinned("a", &["3", "GPU-1"])], Known::Inventory);
        assert_eq!(granted(&got, "a"), ["GPU-1", "GPU-3"]);
    }

    #[test]
    fn a_pin_on_a_busy_device_is_refused_with_its_reason() {
        let devices = vec![gpu(0), busy(gpu(1))];
        let got = allocate(&devices, &[pinned("a", &["1"]), pinned("b", &["GPU-1"])], Known::Inventory);
        let refusal = refused(&got, "a");
        assert_eq!(refusal.reason, format!("pinned device 1 is {BUSY}"));
        assert_eq!(refusal.busy, [("GPU-1".to_owned(), BUSY.to_owned())]);
        assert_eq!(refused(&got, "b").reason, format!("pinned device GPU-1 is {BUSY}"));
        assert!(got.granted.is_empty());
    }

    #[test]
    fn a_pin_on_no_device_is_refused() {
        // GPU 1 is in MIG mode: only its instances are listed, so index 1 names no whole GPU.
        let devices = vec![gpu(0), mig(1, "MIG-1a", "1g.10gb")];
        let requests = [pinned("a", &["3"]), pinned("b", &["1"]), pinned("c", &["GPU-9"]), pinned("d", &["MIG-1a"])];
        let got = allocate(&devices, &requests, Known::Inventory);
        assert_eq!(refused(&got, "a").reason, "pinned device 3 is not on the node");
        assert_eq!(refused(&got, "b").reason, "pinned device 1 is not on the node");
        assert_eq!(refused(&got, "c").reason, "pinned device GPU-9 is not on the node");
        assert_eq!(granted(&got, "d"), ["MIG-1a"]);
    }

    #[test]
    fn a_device_pinned_twice_goes_to_the_first_session_by_name() {
        // The same GPU, written as its UUID by `a` and as its index by `b`, given in the other order.
        let got = allocate(&gpus(2), &[pinned("b", &["0"]), pinned("a", &["GPU-0"])], Known::Inventory);
        assert_eq!(granted(&got, "a"), ["GPU-0"]);
        let refusal = refused(&got, "b");
        assert_eq!(refusal.reason, "pinned device 0 is pinned by session `a` too");
        assert!(refusal.busy.is_empty());
        // A refused pin claims nothing: its other pins stay free for the sessions after it.
        let got = allocate(&gpus(2), &[pinned("a", &["0"]), pinned("b", &["1", "0"]), count("c", 1)], Known::Inventory);
        assert_eq!(refused(&got, "b").reason, "pinned device 0 is pinned by session `a` too");
        assert_eq!(granted(&got, "c"), ["GPU-1"]);
        // One session naming a device twice would be given it twice.
        let got = allocate(&gpus(2), &[pinned("a", &["0", "GPU-0"])], Known::Inventory);
        assert_eq!(refused(&got, "a").reason, "pinned device GPU-0 is named twice");
    }

    #[test]
    fn a_running_session_keeps_its_devices_when_a_session_named_before_it_is_added() {
        let first = allocate(&gpus(4), &[count("m", 2)], Known::Inventory);
        assert_eq!(granted(&first, "m"), ["GPU-0", "GPU-1"]);
        let running = holding(count("m", 2), &["GPU-1", "GPU-0"]);
        let got = allocate(&gpus(4), &[count("a", 2), running], Known::Inventory);
        assert_eq!(granted(&got, "m"), ["GPU-0", "GPU-1"]);
        assert_eq!(granted(&got, "a"), ["GPU-2", "GPU-3"]);
    }

    #[test]
    fn a_session_whose_devices_no_longer_fit_keeps_those_still_free() {
        // Its count changed: it keeps its two and gets one more, before a new session named before it.
        let got = allocate(&gpus(4), &[holding(count("m", 3), &["GPU-2", "GPU-3"]), count("a", 1)], Known::Inventory);
        assert_eq!(granted(&got, "m"), ["GPU-0", "GPU-2", "GPU-3"]);
        assert_eq!(granted(&got, "a"), ["GPU-1"]);
        // It grows on the NUMA node of what it keeps, though the other has lower free devices.
        let got = allocate(
            &two_numa_nodes(),
            &[holding(count("m", 4), &["GPU-4", "GPU-5"]), count("a", 2)],
            Known::Inventory,
        );
        assert_eq!(granted(&got, "m"), ["GPU-4", "GPU-5", "GPU-6", "GPU-7"]);
        assert_eq!(granted(&got, "a"), ["GPU-0", "GPU-1"]);
        // It asks for fewer: the lowest of its own.
        let got = allocate(&gpus(4), &[holding(count("m", 1), &["GPU-2", "GPU-3"])], Known::Inventory);
        assert_eq!(granted(&got, "m"), ["GPU-2"]);
        // One of its devices became busy, or left the node.
        let devices = vec![gpu(0), gpu(1), busy(gpu(2)), gpu(3)];
        let got = allocate(&devices, &[holding(count("m", 2), &["GPU-2", "GPU-3"])], Known::Inventory);
        assert_eq!(granted(&got, "m"), ["GPU-0", "GPU-3"]);
        let got = allocate(&gpus(4), &[holding(count("m", 2), &["GPU-3", "GPU-7"])], Known::Inventory);
        assert_eq!(granted(&got, "m"), ["GPU-0", "GPU-3"]);
        // A pin took one of them: the pin wins, whatever the names.
        let got =
            allocate(&gpus(4), &[holding(count("a", 2), &["GPU-2", "GPU-3"]), pinned("z", &["3"])], Known::Inventory);
        assert_eq!(granted(&got, "z"), ["GPU-3"]);
        assert_eq!(granted(&got, "a"), ["GPU-0", "GPU-2"]);
        // It holds one device twice.
        let got = allocate(&gpus(4), &[holding(count("m", 2), &["GPU-3", "GPU-3"])], Known::Inventory);
        assert_eq!(granted(&got, "m"), ["GPU-0", "GPU-3"]);
        // Refused, its own devices go back to the others.
        let got = allocate(&gpus(2), &[holding(count("m", 3), &["GPU-1"]), count("z", 1)], Known::Inventory);
        assert!(got.refused.contains_key("m"));
        assert_eq!(granted(&got, "z"), ["GPU-0"]);
    }

    fn two_numa_nodes() -> Vec<Device> {
        (0..8).map(|i| Device { group: Some(i / 4), ..gpu(i) }).collect()
    }

    #[test]
    fn a_sessions_gpus_are_kept_on_one_numa_node_when_one_can_hold_them() {
        let taken = pinned("0", &["0", "1"]);
        let got = allocate(&two_numa_nodes(), &[taken.clone(), count("a", 4)], Known::Inventory);
        assert_eq!(granted(&got, "a"), ["GPU-4", "GPU-5", "GPU-6", "GPU-7"]);
        let got = allocate(&two_numa_nodes(), &[taken.clone(), count("a", 2)], Known::Inventory);
        assert_eq!(granted(&got, "a"), ["GPU-2", "GPU-3"]);
        // Taken by busy devices rather than pins, the same.
        let mut devices = two_numa_nodes();
        devices[0] = busy(devices[0].clone());
        devices[1] = busy(devices[1].clone());
        let got = allocate(&devices, &[count("a", 4), count("b", 2)], Known::Inventory);
        assert_eq!(granted(&got, "a"), ["GPU-4", "GPU-5", "GPU-6", "GPU-7"]);
        assert_eq!(granted(&got, "b"), ["GPU-2", "GPU-3"]);
        // No one node can hold 5: the lowest free GPUs of the machine.
        let got = allocate(&two_numa_nodes(), &[taken, count("a", 5)], Known::Inventory);
        assert_eq!(granted(&got, "a"), ["GPU-2", "GPU-3", "GPU-4", "GPU-5", "GPU-6"]);
    }

    #[test]
    fn the_numa_node_chosen_is_the_one_with_the_lowest_free_gpu() {
        // Group numbers do not order the choice: group 1 holds the lower GPUs.
        let devices: Vec<Device> = (0..4).map(|i| Device { group: Some(1 - i / 2), ..gpu(i) }).collect();
        let got = allocate(&devices, &[count("a", 2)], Known::Inventory);
        assert_eq!(granted(&got, "a"), ["GPU-0", "GPU-1"]);
        // GPUs of unknown locality are a group of their own.
        let devices = vec![gpu(0), Device { group: Some(0), ..gpu(1) }, Device { group: Some(0), ..gpu(2) }, gpu(3)];
        let got = allocate(&devices, &[count("a", 2), count("b", 2)], Known::Inventory);
        assert_eq!(granted(&got, "a"), ["GPU-0", "GPU-3"]);
        assert_eq!(granted(&got, "b"), ["GPU-1", "GPU-2"]);
    }

    #[test]
    fn mig_instances_are_given_by_profile() {
        let devices = vec![
            gpu(0),
            mig(1, "MIG-c", "1g.10gb"),
            mig(1, "MIG-a", "1g.10gb"),
            mig(1, "MIG-b", "3g.40gb"),
            mig(2, "MIG-0", "1g.10gb"),
        ];
        let requests = [instances("a", "1g.10gb", 2), instances("b", "3g.40gb", 1), instances("c", "1g.10gb", 2)];
        let got = allocate(&devices, &requests, Known::Inventory);
        assert_eq!(granted(&got, "a"), ["MIG-a", "MIG-c"]);
        assert_eq!(granted(&got, "b"), ["MIG-b"]);
        assert_eq!(refused(&got, "c").reason, "needs 2 MIG instances of profile 1g.10gb; 1 is free");
        // A running MIG session keeps its instances.
        let requests = [instances("a", "1g.10gb", 1), holding(instances("b", "1g.10gb", 2), &["MIG-0", "MIG-a"])];
        let got = allocate(&devices, &requests, Known::Inventory);
        assert_eq!(granted(&got, "a"), ["MIG-c"]);
        assert_eq!(granted(&got, "b"), ["MIG-a", "MIG-0"]);
    }

    #[test]
    fn mig_instances_are_never_given_for_whole_gpus() {
        // GPU 1 is in MIG mode: its instances are free, yet only GPU 0 is a whole GPU.
        let devices = vec![gpu(0), mig(1, "MIG-a", "1g.10gb"), mig(1, "MIG-b", "1g.10gb")];
        let got = allocate(&devices, &[count("a", 2)], Known::Inventory);
        let refusal = refused(&got, "a");
        assert_eq!(refusal.reason, "needs 2 GPUs; 1 is free on the node");
        assert!(refusal.busy.is_empty());
        // Nor kept for them: a count session holding instances is placed on whole GPUs.
        let got = allocate(&devices, &[holding(count("a", 1), &["MIG-a"])], Known::Inventory);
        assert_eq!(granted(&got, "a"), ["GPU-0"]);
        // And the other way: whole GPUs are not MIG instances.
        let got = allocate(&devices, &[holding(instances("a", "1g.10gb", 1), &["GPU-0"])], Known::Inventory);
        assert_eq!(granted(&got, "a"), ["MIG-a"]);
    }

    #[test]
    fn offline_uuid_pins_are_granted_as_written_and_mig_requests_wait_for_the_inventory() {
        let declared: Vec<Device> = (0..2).map(|i| Device { id: i.to_string(), ..gpu(i) }).collect();
        let requests = [
            pinned("a", &["GPU-abc", "1"]),
            instances("b", "1g.10gb", 1),
            count("c", 1),
            pinned("d", &["GPU-abc"]),
            pinned("e", &["5"]),
            holding(count("f", 1), &["GPU-xyz"]),
        ];
        let got = allocate(&declared, &requests, Known::Declared);
        assert_eq!(granted(&got, "a"), ["1", "GPU-abc"]);
        let refusal = refused(&got, "b");
        assert_eq!(refusal.reason, "MIG instances of profile 1g.10gb are placed when the node's inventory is known");
        assert!(refusal.busy.is_empty());
        assert_eq!(granted(&got, "c"), ["0"]);
        assert_eq!(refused(&got, "d").reason, "pinned device GPU-abc is pinned by session `a` too");
        assert_eq!(refused(&got, "e").reason, "pinned device 5 is not on the node");
        assert_eq!(refused(&got, "f").reason, "needs 1 GPU; 0 are free on the node");
        // Known from the inventory, an unknown UUID is refused.
        let got = allocate(&gpus(2), &[pinned("a", &["GPU-abc"])], Known::Inventory);
        assert_eq!(refused(&got, "a").reason, "pinned device GPU-abc is not on the node");
    }

    #[test]
    fn too_few_free_gpus_are_refused_listing_the_busy_ones() {
        let devices = vec![busy(gpu(3)), gpu(2), busy(gpu(1)), gpu(0), busy(mig(4, "MIG-a", "1g.10gb"))];
        let got = allocate(&devices, &[count("a", 3), count("b", 1)], Known::Inventory);
        let refusal = refused(&got, "a");
        assert_eq!(refusal.reason, "needs 3 GPUs; 2 are free on the node");
        assert_eq!(refusal.busy, [("GPU-1".to_owned(), BUSY.to_owned()), ("GPU-3".to_owned(), BUSY.to_owned())]);
        // A refused session claims nothing.
        assert_eq!(granted(&got, "b"), ["GPU-0"]);
        let got = allocate(&devices, &[instances("a", "1g.10gb", 1)], Known::Inventory);
        assert_eq!(refused(&got, "a").busy, [("MIG-a".to_owned(), BUSY.to_owned())]);
    }

    #[test]
    fn a_session_asking_for_no_gpu_gets_none() {
        let got =
            allocate(&[], &[count("a", 0), holding(count("b", 0), &["GPU-0"]), pinned("c", &[])], Known::Inventory);
        assert_eq!(got.granted.len(), 3);
        assert!(got.granted.values().all(Vec::is_empty));
        let got = allocate(&[], &[instances("a", "1g.10gb", 0)], Known::Declared);
        assert_eq!(granted(&got, "a"), Vec::<&str>::new());
    }

    #[test]
    fn a_device_listed_twice_counts_once_as_first_listed() {
        let devices = vec![gpu(0), busy(gpu(0)), gpu(1)];
        let got = allocate(&devices, &[count("a", 2), count("b", 1)], Known::Inventory);
        assert_eq!(granted(&got, "a"), ["GPU-0", "GPU-1"]);
        assert_eq!(refused(&got, "b").reason, "needs 1 GPU; 0 are free on the node");
    }

    #[test]
    fn a_session_declared_twice_differently_is_refused() {
        let got = allocate(&gpus(2), &[count("a", 1), count("a", 1), count("b", 1), count("b", 2)], Known::Inventory);
        assert_eq!(granted(&got, "a"), ["GPU-0"]);
        assert_eq!(refused(&got, "b").reason, "the session is declared more than once, with different GPU requests");
    }

    // Properties, on random nodes (whole GPUs, GPUs in MIG mode, NUMA groups, busy devices; known from the
    // inventory or only declared) and random sessions.

    const PROFILES: [&str; 2] = ["1g.10gb", "3g.40gb"];

    fn node() -> impl Strategy<Value = (Vec<Device>, Known)> {
        let gpu = (
            prop::option::of(0u32..3),
            prop::bool::weighted(0.2),
            prop::option::weighted(0.25, prop::collection::vec((0..PROFILES.len(), prop::bool::weighted(0.15)), 1..=3)),
        );
        (any::<bool>(), prop::collection::vec(gpu, 0..=16)).prop_map(|(offline, gpus)| {
            let known = if offline { Known::Declared } else { Known::Inventory };
            let mut devices = Vec::new();
            for (index, (group, busy, mig)) in (0u32..).zip(gpus) {
                // UUIDs that do not sort as their indexes do, as real ones.
                let uuid = (index * 37 + 11) % 256;
                let why =
                    |busy: bool| busy.then(|| format!("used by process {}, not in a bai container", 4000 + index));
                match (known, mig) {
                    (Known::Inventory, Some(instances)) => {
                        for (k, (profile, busy)) in instances.into_iter().enumerate() {
                            let profile = Some(PROFILES[profile].to_owned());
                            let id = format!("MIG-{uuid:02x}{k}");
                            devices.push(Device { id, index, mig_profile: profile, group, busy: why(busy) });
                        }
                    }
                    _ => {
                        let id = if offline { index.to_string() } else { format!("GPU-{uuid:02x}") };
                        devices.push(Device { id, index, mig_profile: None, group, busy: why(busy) });
                    }
                }
            }
            (devices, known)
        })
    }

    fn placed_want() -> impl Strategy<Value = Want> {
        prop_oneof![
            4 => (0u32..=4).prop_map(Want::Count),
            1 => (prop::sample::select(&PROFILES[..]), 0u32..=2)
                .prop_map(|(profile, count)| Want::Mig { profile: profile.to_owned(), count }),
        ]
    }

    /// Sessions named `s{from}`.. `s{to}`, sometimes pinned (to devices, their indexes, or nothing on the node),
    /// holding random devices when `running`.
    fn sessions(
        devices: &[Device],
        names: std::ops::Range<u8>,
        running: bool,
    ) -> impl Strategy<Value = Vec<Request>> + use<> {
        let mut pins: Vec<String> = devices.iter().flat_map(|d| [d.id.clone(), d.index.to_string()]).collect();
        pins.extend(["99".to_owned(), "GPU-ffff".to_owned()]);
        let mut held: Vec<String> = devices.iter().map(|d| d.id.clone()).collect();
        held.push("GPU-gone".to_owned());
        let want = prop_oneof![4 => placed_want(), 1 => prop::collection::vec(prop::sample::select(pins), 0..=2).prop_map(Want::Pinned)];
        let current = prop::collection::vec(prop::sample::select(held), if running { 0..=3 } else { 0..=0 });
        prop::collection::btree_map(names, (want, current), 0..=12).prop_map(|sessions| {
            let sessions = sessions.into_iter();
            sessions.map(|(n, (want, current))| Request { session: format!("s{n:02}"), want, current }).collect()
        })
    }

    fn case() -> impl Strategy<Value = (Vec<Device>, Vec<Request>, Known)> {
        node().prop_flat_map(|(devices, known)| {
            let requests = sessions(&devices, 0..32, true);
            (Just(devices), requests, Just(known))
        })
    }

    /// The device a pin names, by the rule, independently of the code under test; for an offline UUID, the UUID.
    fn names(devices: &[Device], known: Known, pin: &str) -> Option<String> {
        let decimal = pin.parse::<u32>().ok().filter(|_| pin.bytes().all(|b| b.is_ascii_digit()));
        devices
            .iter()
            .find(|d| d.id == pin)
            .or_else(|| {
                devices.iter().filter(|d| Some(d.index) == decimal && d.mig_profile.is_none()).min_by_key(|d| &d.id)
            })
            .map(|d| d.id.clone())
            .or_else(|| (known == Known::Declared && decimal.is_none()).then(|| pin.to_owned()))
    }

    fn sorted_as_listed(devices: &[Device], ids: &[String]) -> bool {
        let key = |id: &String| match devices.iter().find(|d| &d.id == id) {
            Some(d) => (false, d.index, id.clone()),
            None => (true, 0, id.clone()),
        };
        ids.windows(2).all(|w| key(&w[0]) < key(&w[1]))
    }

    proptest! {
        #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::default() })]

        /// No device is given twice, no busy device is given, and each session gets what it asked, listed in
        /// index order.
        #[test]
        fn every_session_gets_what_it_asked_and_no_device_is_given_twice((devices, requests, known) in case()) {
            let got = allocate(&devices, &requests, known);
            let sessions: BTreeSet<&str> = requests.iter().map(|r| r.session.as_str()).collect();
            let answered: BTreeSet<&str> = got.granted.keys().chain(got.refused.keys()).map(String::as_str).collect();
            prop_assert_eq!(&answered, &sessions);
            prop_assert_eq!(got.granted.len() + got.refused.len(), sessions.len());
            let mut given = BTreeSet::new();
            for request in &requests {
                let Some(ids) = got.granted.get(&request.session) else { continue };
                prop_assert!(sorted_as_listed(&devices, ids), "{:?} out of order", ids);
                let of: Vec<Option<&Device>> = ids.iter().map(|id| devices.iter().find(|d| &d.id == id)).collect();
                for (id, device) in ids.iter().zip(&of) {
                    prop_assert!(given.insert(id.clone()), "{} given twice: {:?}", id, got);
                    prop_assert!(device.is_none_or(|d| d.busy.is_none()), "busy {} given: {:?}", id, got);
                }
                match &request.want {
                    Want::Count(n) => {
                        prop_assert_eq!(ids.len(), *n as usize);
                        prop_assert!(of.iter().all(|d| d.is_some_and(|d| d.mig_profile.is_none())), "{:?}", ids);
                    }
                    Want::Mig { profile, count } => {
                        prop_assert_eq!(ids.len(), *count as usize);
                        prop_assert!(of.iter().all(|d| d.is_some_and(|d| d.mig_profile.as_ref() == Some(profile))));
                    }
                    Want::Pinned(pins) => {
                        prop_assert_eq!(ids.len(), pins.len());
                        // Only an offline UUID pin is given without being a device of the node.
                        for (id, device) in ids.iter().zip(&of) {
                            prop_assert!(device.is_some() || (known == Known::Declared && pins.contains(id)));
                        }
                    }
                }
            }
            for refusal in got.refused.values() {
                let listed: Vec<String> = refusal.busy.iter().map(|(id, _)| id.clone()).collect();
                prop_assert!(sorted_as_listed(&devices, &listed));
                for (id, why) in &refusal.busy {
                    prop_assert!(devices.iter().any(|d| &d.id == id && d.busy.as_ref() == Some(why)));
                }
            }
        }

        /// The same node and sessions, listed in any order, give the same allocation.
        #[test]
        fn the_allocation_does_not_depend_on_listing_order(
            ((devices, requests, known), shuffled, devices_shuffled) in case().prop_flat_map(|(devices, requests, known)| {
                let shuffled = Just(requests.clone()).prop_shuffle();
                let devices_shuffled = Just(devices.clone()).prop_shuffle();
                (Just((devices, requests, known)), shuffled, devices_shuffled)
            })
        ) {
            let got = allocate(&devices, &requests, known);
            prop_assert_eq!(&allocate(&devices, &requests, known), &got);
            prop_assert_eq!(&allocate(&devices, &shuffled, known), &got);
            prop_assert_eq!(&allocate(&devices_shuffled, &shuffled, known), &got);
        }

        /// Once the sessions run on what they were given, adding, removing and changing other sessions moves
        /// none of them, unless a new pin names one of its devices.
        #[test]
        fn running_sessions_keep_their_devices_whatever_happens_to_the_others(
            ((devices, requests, known), removed, changed, added) in case().prop_flat_map(|(devices, requests, known)| {
                let removed = prop::collection::vec(prop::bool::weighted(0.3), 32);
                let changed = prop::collection::vec(prop::option::weighted(0.2, placed_want()), 32);
                let added = sessions(&devices, 32..64, false);
                (Just((devices, requests, known)), removed, changed, added)
            })
        ) {
            let first = allocate(&devices, &requests, known);
            let mut next = Vec::new();
            let mut unchanged = BTreeSet::new();
            for ((request, remove), change) in requests.iter().zip(removed).zip(changed) {
                let is_pinned = matches!(request.want, Want::Pinned(_));
                if remove && !is_pinned {
                    continue;
                }
                let current = first.granted.get(&request.session).cloned().unwrap_or_default();
                let want = match change {
                    Some(want) if !is_pinned => want,
                    _ => {
                        unchanged.insert(request.session.clone());
                        request.want.clone()
                    }
                };
                next.push(Request { session: request.session.clone(), want, current });
            }
            next.extend(added);
            let second = allocate(&devices, &next, known);
            for session in &unchanged {
                let Some(before) = first.granted.get(session) else { continue };
                let named: BTreeSet<String> = next
                    .iter()
                    .filter(|r| &r.session != session)
                    .filter_map(|r| if let Want::Pinned(pins) = &r.want { Some(pins) } else { None })
                    .flatten()
                    .filter_map(|pin| names(&devices, known, pin))
                    .collect();
                if before.iter().any(|id| named.contains(id)) {
                    continue;
                }
                prop_assert_eq!(second.granted.get(session), Some(before), "{} moved: {:?} then {:?}", session, first, second);
            }
        }

        /// A session pinning free devices of the node that no other session pins is given exactly them.
        #[test]
        fn pins_on_free_devices_no_one_else_pins_are_honoured((devices, requests, known) in case()) {
            let got = allocate(&devices, &requests, known);
            let resolved: BTreeMap<&str, Vec<Option<String>>> = requests
                .iter()
                .filter_map(|r| if let Want::Pinned(pins) = &r.want { Some((r.session.as_str(), pins)) } else { None })
                .map(|(session, pins)| (session, pins.iter().map(|pin| names(&devices, known, pin)).collect()))
                .collect();
            for (session, ids) in &resolved {
                let free = ids.iter().all(|id| {
                    id.as_ref().is_some_and(|id| devices.iter().find(|d| &d.id == id).is_none_or(|d| d.busy.is_none()))
                });
                let distinct: BTreeSet<&Option<String>> = ids.iter().collect();
                let pinned_by_another = resolved
                    .iter()
                    .filter(|(other, _)| other != &session)
                    .any(|(_, theirs)| theirs.iter().any(|id| id.is_some() && ids.contains(id)));
                if !free || distinct.len() != ids.len() || pinned_by_another {
                    continue;
                }
                let want: BTreeSet<String> = ids.iter().flatten().cloned().collect();
                let given: Option<BTreeSet<String>> = got.granted.get(*session).map(|ids| ids.iter().cloned().collect());
                prop_assert_eq!(given, Some(want), "{} not honoured: {:?}", session, got);
            }
        }
    }
}

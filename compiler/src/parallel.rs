//! Ordered parallel map over the available cores. Stages use it for work that is independent
//! per item (parsing files, checking documents, emitting instances, rendering objects); results
//! come back in input order, so output never depends on scheduling.

/// Threads to use: the available cores, at most 8.
fn workers() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, 8)
}

/// The results of the scoped threads `handles`, in their order.
fn join_in_order<R>(
    handles: Vec<std::thread::ScopedJoinHandle<'_, Vec<R>>>,
    total: usize,
) -> Vec<R> {
    let mut out = Vec::with_capacity(total);
    for handle in handles {
        match handle.join() {
            Ok(mut part) => out.append(&mut part),
            // A worker only fails by panicking, which the code under it never does on
            // purpose; re-raise it on this thread rather than lose results silently.
            Err(payload) => std::panic::resume_unwind(payload),
        }
    }
    out
}

/// Maps `f` over `items` on up to `available_parallelism` threads, keeping the order.
pub fn map<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let workers = workers();
    if workers == 1 || items.len() < 2 {
        return items.iter().map(&f).collect();
    }
    let chunk = items.len().div_ceil(workers);
    let f = &f;
    std::thread::scope(|scope| {
        let handles: Vec<_> = items
            .chunks(chunk)
            .map(|part| scope.spawn(move || part.iter().map(f).collect::<Vec<R>>()))
            .collect();
        join_in_order(handles, items.len())
    })
}

/// Like [`map`], consuming the items (each is dropped as soon as it is mapped).
pub fn map_owned<T: Send, R: Send>(items: Vec<T>, f: impl Fn(T) -> R + Sync) -> Vec<R> {
    let workers = workers();
    if workers == 1 || items.len() < 2 {
        return items.into_iter().map(&f).collect();
    }
    let total = items.len();
    let chunk = total.div_ceil(workers);
    let mut parts: Vec<Vec<T>> = Vec::with_capacity(workers);
    let mut rest = items.into_iter();
    loop {
        let part: Vec<T> = rest.by_ref().take(chunk).collect();
        if part.is_empty() {
            break;
        }
        parts.push(part);
    }
    let f = &f;
    std::thread::scope(|scope| {
        let handles: Vec<_> = parts
            .into_iter()
            .map(|part| scope.spawn(move || part.into_iter().map(f).collect::<Vec<R>>()))
            .collect();
        join_in_order(handles, total)
    })
}

/// Like [`map`], with mutable access to each item and its index.
pub fn map_mut<T: Send, R: Send>(items: &mut [T], f: impl Fn(usize, &mut T) -> R + Sync) -> Vec<R> {
    let workers = workers();
    if workers == 1 || items.len() < 2 {
        return items
            .iter_mut()
            .enumerate()
            .map(|(i, item)| f(i, item))
            .collect();
    }
    let total = items.len();
    let chunk = total.div_ceil(workers);
    let f = &f;
    std::thread::scope(|scope| {
        let handles: Vec<_> = items
            .chunks_mut(chunk)
            .enumerate()
            .map(|(c, part)| {
                scope.spawn(move || {
                    part.iter_mut()
                        .enumerate()
                        .map(|(i, item)| f(c * chunk + i, item))
                        .collect::<Vec<R>>()
                })
            })
            .collect();
        join_in_order(handles, total)
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn keeps_order() {
        let items: Vec<u32> = (0..1000).collect();
        assert_eq!(
            super::map(&items, |x| x * 2),
            items.iter().map(|x| x * 2).collect::<Vec<_>>()
        );
        assert_eq!(
            super::map_owned(items.clone(), |x| x * 2),
            items.iter().map(|x| x * 2).collect::<Vec<_>>()
        );
    }
}

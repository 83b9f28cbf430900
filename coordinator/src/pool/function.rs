//! The calls a user makes with a plain function over their own serde types: `map`,
//! `imap`, `apply`, ... with Python's meanings. A function travels to a worker as the
//! offset of a trampoline compiled for it (see [`corepool_worker::function`]), so it must
//! capture nothing: a `fn`, or a closure that uses no variable from around it.

use std::{marker::PhantomData, ops::Range, sync::Mutex};

use corepool_protocol::TaskRef;
use corepool_worker::{
    Task,
    function::{Call, Single, Spread, assert_captures_nothing, offset_of, run_chunk},
};
use serde::{Deserialize, Serialize, de::DeserializeOwned};

use super::{AsyncResult, Callbacks, Pool, PoolError};
use crate::Items;

/// What a function's argument or output must be to travel between processes: an owned
/// serde type that can be sent to another thread.
pub trait Wire: Serialize + DeserializeOwned + Send + 'static {}

impl<T: Serialize + DeserializeOwned + Send + 'static> Wire for T {}

/// An item of the sequence a function is mapped over: the argument itself, or a reference
/// to one, which is cloned (so that a slice or `&Vec` can be mapped over as it is).
pub trait IntoItem<A> {
    /// The argument.
    fn into_item(self) -> A;
}

impl<A> IntoItem<A> for A {
    fn into_item(self) -> A {
        self
    }
}

impl<A: Clone> IntoItem<A> for &A {
    fn into_item(self) -> A {
        self.clone()
    }
}

/// The task a function call is seen as by the pool's chunked machinery: it encodes nothing
/// of its own, and refers the worker to the trampoline of `C` over inputs `In`.
pub(crate) struct FnTask<C, In>(PhantomData<fn() -> (C, In)>);

impl<C, In> FnTask<C, In> {
    fn new() -> Self {
        Self(PhantomData)
    }
}

impl<C, In> Serialize for FnTask<C, In> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // A unit: the trampoline decodes `((), items)`.
        ().serialize(serializer)
    }
}

impl<'de, C, In> Deserialize<'de> for FnTask<C, In> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        <()>::deserialize(deserializer).map(|()| Self::new())
    }
}

impl<C, In> Task for FnTask<C, In>
where
    C: Call<In>,
    C::Out: Wire,
    In: Wire,
{
    const NAME: &'static str = "function";
    type Chunk = Vec<In>;
    type Output = C::Out;

    /// Not used: workers run the function's trampoline, never this.
    fn run(&self, _chunk: Vec<In>) -> Result<Vec<C::Out>, String> {
        Err("a function is run by its trampoline in a worker".to_owned())
    }

    fn task_ref() -> TaskRef<&'static str> {
        TaskRef::Function(offset_of(run_chunk::<C, In>))
    }
}

/// Items owned by the pool while a job sends them: each is moved into its chunk, sent
/// once (a chunk sent again after a worker died is sent from its encoded frame).
pub(crate) struct Taken<A> {
    items: Mutex<Vec<Option<A>>>,
    len: usize,
}

impl<A> Taken<A> {
    fn new(items: impl IntoIterator<Item = A>) -> Self {
        let items: Vec<Option<A>> = items.into_iter().map(Some).collect();
        let len = items.len();
        Self { items: Mutex::new(items), len }
    }
}

impl<A> Items<Vec<A>> for Taken<A> {
    fn len(&self) -> usize {
        self.len
    }

    fn chunk(&self, range: Range<usize>) -> Vec<A> {
        let mut items = self.items.lock().unwrap_or_else(|e| e.into_inner());
        items[range].iter_mut().map(|item| item.take().expect("each item is cut into a chunk once")).collect()
    }
}

/// The function calls of a pool with a chunk size set for them: see
/// [`Pool::chunksize`].
#[derive(Clone, Copy)]
pub struct Chunked<'p> {
    pool: &'p Pool,
    chunk_size: Option<usize>,
}

macro_rules! function_calls {
    ($($doc_suffix:literal)?) => {
        /// Runs `f(arg)` in a worker and waits for its result, like Python's `Pool.apply`.
        $(#[doc = $doc_suffix])?
        pub fn apply<F, A, R>(&self, f: F, arg: A) -> Result<R, PoolError>
        where
            F: Fn(A) -> R + Copy + 'static,
            A: Wire,
            R: Wire,
        {
            let _ = f;
            self.calls().call_apply::<Single<F>, A>(arg)
        }

        /// Runs `f` on every item in the workers and returns the results in item order,
        /// like Python's `Pool.map`. `items` is a `Vec`, any iterator, or a slice (cloned).
        $(#[doc = $doc_suffix])?
        pub fn map<F, A, R, X: IntoItem<A>>(&self, f: F, items: impl IntoIterator<Item = X>) -> Result<Vec<R>, PoolError>
        where
            F: Fn(A) -> R + Copy + 'static,
            A: Wire,
            R: Wire,
        {
            let _ = f;
            self.calls().call_map::<Single<F>, A, X>(items)
        }

        /// Like [`map`](Pool::map) over items that are tuples, whose fields `f` takes as
        /// its arguments (`f(a, b)` for `(a, b)`), like Python's `Pool.starmap`; tuples of
        /// one to six fields.
        $(#[doc = $doc_suffix])?
        pub fn starmap<F, T, X: IntoItem<T>>(
            &self,
            f: F,
            items: impl IntoIterator<Item = X>,
        ) -> Result<Vec<<Spread<F> as Call<T>>::Out>, PoolError>
        where
            Spread<F>: Call<T>,
            <Spread<F> as Call<T>>::Out: Wire,
            T: Wire,
        {
            let _ = f;
            self.calls().call_map::<Spread<F>, T, X>(items)
        }

        /// Starts `f(arg)` in a worker and returns at once, like Python's
        /// `Pool.apply_async`. When the result arrives, `callbacks` run on the pool's
        /// callback thread, then the returned handle is ready.
        $(#[doc = $doc_suffix])?
        pub fn apply_async<F, A, R>(&self, f: F, arg: A, callbacks: Callbacks<R>) -> Result<AsyncResult<R>, PoolError>
        where
            F: Fn(A) -> R + Copy + 'static,
            A: Wire,
            R: Wire,
        {
            let _ = f;
            self.calls().call_apply_async::<Single<F>, A>(arg, callbacks)
        }

        /// Starts [`map`](Pool::map) in the background and returns at once, like Python's
        /// `Pool.map_async`; the handle gives the results in item order.
        $(#[doc = $doc_suffix])?
        pub fn map_async<F, A, R, X: IntoItem<A>>(
            &self,
            f: F,
            items: impl IntoIterator<Item = X>,
            callbacks: Callbacks<Vec<R>>,
        ) -> Result<AsyncResult<Vec<R>>, PoolError>
        where
            F: Fn(A) -> R + Copy + 'static,
            A: Wire,
            R: Wire,
        {
            let _ = f;
            self.calls().call_map_async::<Single<F>, A, X>(items, callbacks)
        }

        /// [`map_async`](Pool::map_async) over tuples, as [`starmap`](Pool::starmap) is to
        /// [`map`](Pool::map), like Python's `Pool.starmap_async`.
        $(#[doc = $doc_suffix])?
        pub fn starmap_async<F, T, X: IntoItem<T>>(
            &self,
            f: F,
            items: impl IntoIterator<Item = X>,
            callbacks: Callbacks<Vec<<Spread<F> as Call<T>>::Out>>,
        ) -> Result<AsyncResult<Vec<<Spread<F> as Call<T>>::Out>>, PoolError>
        where
            Spread<F>: Call<T>,
            <Spread<F> as Call<T>>::Out: Wire,
            T: Wire,
        {
            let _ = f;
            self.calls().call_map_async::<Spread<F>, T, X>(items, callbacks)
        }
    };
}

impl Pool {
    function_calls!();
    /// Like [`map`](Pool::map), but lazy: reads `items` a bounded window ahead of the
    /// results, and yields each result in item order as soon as it is ready, like
    /// Python's `Pool.imap` (one item to a chunk unless [`chunksize`](Pool::chunksize)
    /// says otherwise). After an error, the iterator ends.
    pub fn imap<'i, F, A, R, X: IntoItem<A> + 'i>(
        &'i self,
        f: F,
        items: impl IntoIterator<Item = X, IntoIter: 'i> + 'i,
    ) -> Result<impl Iterator<Item = Result<R, PoolError>> + 'i, PoolError>
    where
        F: Fn(A) -> R + Copy + 'static,
        A: Wire,
        R: Wire,
    {
        let _ = f;
        self.calls().call_imap::<Single<F>, A, X>(items)
    }

    /// Like [`imap`](Pool::imap), but yields the results in the order they arrive from
    /// the workers, like Python's `Pool.imap_unordered`.
    pub fn imap_unordered<'i, F, A, R, X: IntoItem<A> + 'i>(
        &'i self,
        f: F,
        items: impl IntoIterator<Item = X, IntoIter: 'i> + 'i,
    ) -> Result<impl Iterator<Item = Result<R, PoolError>> + 'i, PoolError>
    where
        F: Fn(A) -> R + Copy + 'static,
        A: Wire,
        R: Wire,
    {
        let _ = f;
        self.calls().call_imap_unordered::<Single<F>, A, X>(items)
    }

    /// The same calls with `chunk_size` items to a chunk (Python's `chunksize`): larger
    /// chunks cost fewer messages, smaller ones spread uneven work better.
    /// `pool.chunksize(100).map(f, items)`.
    pub fn chunksize(&self, chunk_size: usize) -> Chunked<'_> {
        Chunked { pool: self, chunk_size: Some(chunk_size.max(1)) }
    }

    fn calls(&self) -> Chunked<'_> {
        Chunked { pool: self, chunk_size: None }
    }
}

impl<'p> Chunked<'p> {
    function_calls!("With the chunk size given to [`Pool::chunksize`].");
    /// [`Pool::imap`] with the chunk size given to [`Pool::chunksize`].
    pub fn imap<F, A, R, X: IntoItem<A> + 'p>(
        self,
        f: F,
        items: impl IntoIterator<Item = X, IntoIter: 'p> + 'p,
    ) -> Result<impl Iterator<Item = Result<R, PoolError>> + 'p, PoolError>
    where
        F: Fn(A) -> R + Copy + 'static,
        A: Wire,
        R: Wire,
    {
        let _ = f;
        self.calls().call_imap::<Single<F>, A, X>(items)
    }

    /// [`Pool::imap_unordered`] with the chunk size given to [`Pool::chunksize`].
    pub fn imap_unordered<F, A, R, X: IntoItem<A> + 'p>(
        self,
        f: F,
        items: impl IntoIterator<Item = X, IntoIter: 'p> + 'p,
    ) -> Result<impl Iterator<Item = Result<R, PoolError>> + 'p, PoolError>
    where
        F: Fn(A) -> R + Copy + 'static,
        A: Wire,
        R: Wire,
    {
        let _ = f;
        self.calls().call_imap_unordered::<Single<F>, A, X>(items)
    }

    fn calls(&self) -> Self {
        *self
    }

    fn call_apply<C: Call<In, Out: Wire>, In: Wire>(self, arg: In) -> Result<C::Out, PoolError> {
        assert_captures_nothing::<C>();
        self.pool.apply_task(&FnTask::<C, In>::new(), &Taken::new([arg]), 0)
    }

    fn call_map<C: Call<In, Out: Wire>, In: Wire, X: IntoItem<In>>(
        self,
        items: impl IntoIterator<Item = X>,
    ) -> Result<Vec<C::Out>, PoolError> {
        assert_captures_nothing::<C>();
        let items = Taken::new(items.into_iter().map(IntoItem::into_item));
        self.pool.map_task(&FnTask::<C, In>::new(), &items, self.chunk_size)
    }

    fn call_imap<'i, C: Call<In, Out: Wire>, In: Wire, X: IntoItem<In> + 'i>(
        self,
        items: impl IntoIterator<Item = X, IntoIter: 'i> + 'i,
    ) -> Result<impl Iterator<Item = Result<C::Out, PoolError>> + 'i, PoolError>
    where
        Self: 'i,
    {
        assert_captures_nothing::<C>();
        let task: &'i FnTask<C, In> = Box::leak(Box::new(FnTask::new()));
        self.pool.imap_iter(task, chunks_of(items, self.chunk_size.unwrap_or(1)))
    }

    fn call_imap_unordered<'i, C: Call<In, Out: Wire>, In: Wire, X: IntoItem<In> + 'i>(
        self,
        items: impl IntoIterator<Item = X, IntoIter: 'i> + 'i,
    ) -> Result<impl Iterator<Item = Result<C::Out, PoolError>> + 'i, PoolError>
    where
        Self: 'i,
    {
        assert_captures_nothing::<C>();
        // A zero-sized value: nothing is allocated, nothing leaks.
        let task: &'i FnTask<C, In> = Box::leak(Box::new(FnTask::new()));
        let results = self.pool.imap_unordered_iter(task, chunks_of(items, self.chunk_size.unwrap_or(1)))?;
        Ok(results.map(|result| result.map(|(_, output)| output)))
    }

    fn call_apply_async<C: Call<In, Out: Wire>, In: Wire>(
        self,
        arg: In,
        callbacks: Callbacks<C::Out>,
    ) -> Result<AsyncResult<C::Out>, PoolError> {
        assert_captures_nothing::<C>();
        self.pool.apply_async_task(&FnTask::<C, In>::new(), &Taken::new([arg]), 0, callbacks)
    }

    fn call_map_async<C: Call<In, Out: Wire>, In: Wire, X: IntoItem<In>>(
        self,
        items: impl IntoIterator<Item = X>,
        callbacks: Callbacks<Vec<C::Out>>,
    ) -> Result<AsyncResult<Vec<C::Out>>, PoolError> {
        assert_captures_nothing::<C>();
        let items = Taken::new(items.into_iter().map(IntoItem::into_item));
        self.pool.map_async_task(FnTask::<C, In>::new(), items, self.chunk_size, callbacks)
    }
}

/// `items` cut into chunks of `size`, read only as the chunks are taken.
fn chunks_of<In, X: IntoItem<In>>(items: impl IntoIterator<Item = X>, size: usize) -> impl Iterator<Item = Vec<In>> {
    let mut items = items.into_iter();
    std::iter::from_fn(move || {
        let chunk: Vec<In> = items.by_ref().take(size).map(IntoItem::into_item).collect();
        (!chunk.is_empty()).then_some(chunk)
    })
}

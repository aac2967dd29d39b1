//! The glommio runtime: one pinned executor per core, each owning its
//! sockets and its handle to the address map.

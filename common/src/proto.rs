//! The generated gRPC contracts (`proto/`), and their encoded descriptors for reflection.

#![allow(clippy::all, missing_docs)]

pub mod fiscalbill {
    pub mod r#type {
        pub mod v1 {
            tonic::include_proto!("fiscalbill.r#type.v1");
        }
    }
    pub mod bureau {
        pub mod v1 {
            tonic::include_proto!("fiscalbill.bureau.v1");
        }
    }
    pub mod collection {
        pub mod v1 {
            tonic::include_proto!("fiscalbill.collection.v1");

            use std::fmt;

            // These two carry secrets, so their Debug output is written by hand (build.rs skips
            // the derived one) and never shows the value.
            impl fmt::Debug for GetAccessTokenResponse {
                fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.debug_struct("GetAccessTokenResponse")
                        .field("access_token", &"<redacted>")
                        .field("expire_time", &self.expire_time)
                        .finish()
                }
            }

            impl fmt::Debug for GetCardTicketResponse {
                fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.debug_struct("GetCardTicketResponse")
                        .field("ticket", &"<redacted>")
                        .field("expire_time", &self.expire_time)
                        .finish()
                }
            }
        }
    }
}

pub use fiscalbill::bureau::v1 as bureau;
pub use fiscalbill::collection::v1 as collection;
pub use fiscalbill::r#type::v1 as types;

/// Encoded `FileDescriptorSet` of every contract and its imports, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("fiscalbill_descriptor");

/// The gRPC methods this project's servers answer, by path (`/fiscalbill.bureau.v1.BureauService/IssueBill`,
/// health, reflection) → method name. Anything else a caller sends is unknown: it never becomes a
/// metric label or a span name, so that callers cannot grow either.
pub fn method_name(path: &str) -> Option<&'static str> {
    static METHODS: std::sync::OnceLock<std::collections::HashMap<String, String>> = std::sync::OnceLock::new();
    let methods = METHODS.get_or_init(|| {
        use prost::Message;
        let set =
            prost_types::FileDescriptorSet::decode(FILE_DESCRIPTOR_SET).expect("the built descriptor set decodes");
        let ours = set.file.iter().flat_map(|file| {
            file.service.iter().flat_map(move |service| {
                service.method.iter().map(move |method| {
                    (format!("/{}.{}/{}", file.package(), service.name(), method.name()), method.name().to_owned())
                })
            })
        });
        let served = [
            ("grpc.health.v1.Health", "Check"),
            ("grpc.health.v1.Health", "Watch"),
            ("grpc.reflection.v1.ServerReflection", "ServerReflectionInfo"),
            ("grpc.reflection.v1alpha.ServerReflection", "ServerReflectionInfo"),
        ]
        .map(|(service, method)| (format!("/{service}/{method}"), method.to_owned()));
        ours.chain(served).collect()
    });
    methods.get(path).map(String::as_str)
}

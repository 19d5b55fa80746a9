//! Schema fragments shared by the custom resources: the API server enforces every rule here,
//! so a `kubectl apply` of a bad manifest is refused with a message naming the field.

use schemars::{Schema, SchemaGenerator, json_schema};

/// CEL rule for `metadata.name` of an ooda object (the API server itself only checks DNS-1123
/// subdomains): a DNS-1123 label of at most 30 characters, short enough that
/// `<project>--<org>.<domain>` stays a valid host label and `org-<name>` a valid namespace, and
/// without `--`, which separates project from organisation in that host: with it, two tenants'
/// names could make the same host.
pub const NAME_RULE: &str = "self.metadata.name.size() <= 30 && self.metadata.name.matches('^[a-z0-9]+(-[a-z0-9]+)*$')";
pub const NAME_MESSAGE: &str = "metadata.name must be a DNS-1123 label of at most 30 characters: \
     lowercase letters, digits and single '-' between them (no '--', which separates project and \
     organisation in preview and site host names)";

/// A positive resource quantity (`2`, `500m`, `4Gi`), written as a string or an integer.
///
/// The CEL rule turns "negative", "zero" and "not a quantity" into one readable message.
pub fn positive_quantity(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "x-kubernetes-int-or-string": true,
        "x-kubernetes-validations": [{
            "rule": "isQuantity(string(self)) && quantity(string(self)).isGreaterThan(quantity('0'))",
            "message": "must be a positive quantity such as 2, 500m or 4Gi"
        }]
    })
}

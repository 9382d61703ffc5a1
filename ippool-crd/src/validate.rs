//! Validation errors: every problem names the field (as a JSON path into the
//! resource, e.g. `spec.blockSize`), says what is wrong, and where we can,
//! how to fix it. Validators collect all problems rather than stopping at the
//! first, so a user fixes a manifest in one round trip.

use std::fmt;

/// One problem with one field of a resource.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}{}", fmt_hint(.hint))]
pub struct ValidationError {
    /// JSON path of the offending field, e.g. `spec.blockSize`.
    pub field: String,
    /// What is wrong with it.
    pub message: String,
    /// How to fix it, when there is an obvious fix.
    pub hint: Option<String>,
}

fn fmt_hint(hint: &Option<String>) -> String {
    match hint {
        Some(h) => format!(" (hint: {h})"),
        None => String::new(),
    }
}

impl ValidationError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
            hint: None,
        }
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

/// All the problems found in one resource (or, for [`crate::validate_pool_set`],
/// in a set of resources).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidationErrors {
    /// What was validated, e.g. `IPPool "default-ipv4-ippool"`.
    pub resource: String,
    /// Never empty.
    pub errors: Vec<ValidationError>,
}

impl ValidationErrors {
    /// True when some error is about exactly `field`.
    pub fn has_field(&self, field: &str) -> bool {
        self.errors.iter().any(|e| e.field == field)
    }

    pub fn iter(&self) -> std::slice::Iter<'_, ValidationError> {
        self.errors.iter()
    }

    pub fn len(&self) -> usize {
        self.errors.len()
    }

    pub fn is_empty(&self) -> bool {
        self.errors.is_empty()
    }
}

impl fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.errors.as_slice() {
            [one] => write!(f, "{} is invalid: {one}", self.resource),
            many => {
                write!(f, "{} is invalid ({} problems):", self.resource, many.len())?;
                for e in many {
                    write!(f, "\n  - {e}")?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for ValidationErrors {}

impl<'a> IntoIterator for &'a ValidationErrors {
    type Item = &'a ValidationError;
    type IntoIter = std::slice::Iter<'a, ValidationError>;
    fn into_iter(self) -> Self::IntoIter {
        self.errors.iter()
    }
}

/// Accumulates errors while a validator walks a resource.
#[derive(Debug, Default)]
pub(crate) struct Collector {
    errors: Vec<ValidationError>,
}

impl Collector {
    pub(crate) fn push(&mut self, e: ValidationError) {
        self.errors.push(e);
    }

    pub(crate) fn len(&self) -> usize {
        self.errors.len()
    }

    pub(crate) fn error(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.push(ValidationError::new(field, message));
    }

    pub(crate) fn error_hint(
        &mut self,
        field: impl Into<String>,
        message: impl Into<String>,
        hint: impl Into<String>,
    ) {
        self.push(ValidationError::new(field, message).with_hint(hint));
    }

    pub(crate) fn extend(&mut self, errors: impl IntoIterator<Item = ValidationError>) {
        self.errors.extend(errors);
    }

    pub(crate) fn finish(self, resource: impl Into<String>) -> Result<(), ValidationErrors> {
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(ValidationErrors {
                resource: resource.into(),
                errors: self.errors,
            })
        }
    }
}

/// `Kind "name"` for error messages; unnamed objects are common in tests and
/// in manifests that are still being written.
pub(crate) fn describe(
    kind: &str,
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> String {
    match meta.name.as_deref() {
        Some(n) if !n.is_empty() => format!("{kind} {n:?}"),
        _ => format!("{kind} (unnamed)"),
    }
}

/**
 * Kubernetes' own rules for the names zt writes into a NetworkPolicy, so that a model the
 * API server would refuse is refused at load instead (k8s.io/apimachinery
 * pkg/util/validation: IsQualifiedName, IsValidLabelValue, IsDNS1123Label/Subdomain).
 * Each check returns what is wrong, or undefined when the text is valid.
 */

const DNS1123_LABEL_RE = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const DNS1123_SUBDOMAIN_RE = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
/** The name part of a label key and a label value: alphanumerics with - _ . inside. */
const QUALIFIED_NAME_RE = /^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$/;

const NAME_MAX = 63;
const SUBDOMAIN_MAX = 253;

const NAME_RULE = `at most ${NAME_MAX} characters: letters, digits, '-', '_' and '.', beginning and ending with a letter or digit`;

/** A namespace name (DNS-1123 label). */
export function checkK8sNamespace(name: string): string | undefined {
  if (name.length > NAME_MAX) return `longer than ${NAME_MAX} characters (${name.length})`;
  if (!DNS1123_LABEL_RE.test(name))
    return "a namespace name is lower-case letters, digits and '-', beginning and ending with a letter or digit";
  return undefined;
}

/** An object name such as a NetworkPolicy's (DNS-1123 subdomain). */
export function checkK8sObjectName(name: string): string | undefined {
  if (name.length > SUBDOMAIN_MAX)
    return `longer than ${SUBDOMAIN_MAX} characters (${name.length})`;
  if (!DNS1123_SUBDOMAIN_RE.test(name))
    return "an object name is lower-case letters, digits, '-' and '.', beginning and ending with a letter or digit";
  return undefined;
}

/** A label key: `[prefix/]name`, the prefix a DNS subdomain of ≤ 253 characters. */
export function checkK8sLabelKey(key: string): string | undefined {
  const parts = key.split("/");
  if (parts.length > 2) return "a label key has at most one '/' (prefix/name)";
  const name = parts[parts.length - 1]!;
  if (parts.length === 2) {
    const prefix = parts[0]!;
    if (prefix === "") return "the prefix before '/' is empty";
    if (prefix.length > SUBDOMAIN_MAX)
      return `the prefix is longer than ${SUBDOMAIN_MAX} characters (${prefix.length})`;
    if (!DNS1123_SUBDOMAIN_RE.test(prefix))
      return `the prefix ${JSON.stringify(prefix)} is not a DNS subdomain (lower-case letters, digits, '-' and '.', beginning and ending with a letter or digit)`;
  }
  if (name === "") return "the name part is empty";
  if (name.length > NAME_MAX)
    return `the name part is longer than ${NAME_MAX} characters (${name.length})`;
  if (!QUALIFIED_NAME_RE.test(name)) return `the name part must be ${NAME_RULE}`;
  return undefined;
}

/** A label value: empty, or a name of ≤ 63 characters. */
export function checkK8sLabelValue(value: string): string | undefined {
  if (value === "") return undefined;
  if (value.length > NAME_MAX) return `longer than ${NAME_MAX} characters (${value.length})`;
  if (!QUALIFIED_NAME_RE.test(value)) return `a label value is empty or ${NAME_RULE}`;
  return undefined;
}

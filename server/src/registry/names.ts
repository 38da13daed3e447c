// Repository names and tags, validated with the grammar of the OCI
// distribution spec. A name that passes can be joined into a storage key
// safely: no component can be empty, ".", ".." or start with "_".
import { RegistryError } from './errors.ts';

const NAME_COMPONENT = '[a-z0-9]+(?:(?:\\.|_|__|-+)[a-z0-9]+)*';
const NAME_RE = new RegExp(`^${NAME_COMPONENT}(?:/${NAME_COMPONENT})*$`);
const TAG_RE = /^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$/;
const MAX_NAME_LENGTH = 255;

export function isValidName(name: string): boolean {
  return name.length <= MAX_NAME_LENGTH && NAME_RE.test(name);
}

export function validateName(name: string): string {
  if (!isValidName(name)) {
    throw new RegistryError('NAME_INVALID', `invalid repository name: ${name.slice(0, 100)}`);
  }
  return name;
}

/** `name:tag` or `name@digest`, as clients write an image reference (a tag never holds a colon, a digest always does). */
export function imageRef(name: string, reference: string): string {
  return `${name}${reference.includes(':') ? '@' : ':'}${reference}`;
}

export function isValidTag(tag: string): boolean {
  return TAG_RE.test(tag);
}

export function validateTag(tag: string): string {
  if (!isValidTag(tag)) throw new RegistryError('TAG_INVALID', `invalid tag: ${tag.slice(0, 130)}`);
  return tag;
}

// Request validation: zod schemas for params, query and bodies. A failure becomes one 400 naming every bad field.

import type { z } from 'zod';
import { BadRequest } from '../errors.js';

export function parse<T extends z.ZodTypeAny>(schema: T, value: unknown, where: string): z.output<T> {
  const r = schema.safeParse(value);
  if (r.success) return r.data as z.output<T>;
  const issues = r.error.issues.map((i) => (i.path.length ? `${i.path.join('.')}: ${i.message}` : i.message));
  throw new BadRequest(`invalid ${where}: ${issues.join('; ')}`);
}

// Settings one component is given to reach another, checked the same way by every component that reads them.
import { z } from 'zod';

/** An http(s) base URL other URLs are built on: no query, fragment or credentials. */
export const httpBaseUrl = z.string().superRefine((v, ctx) => {
  let url: URL;
  try {
    url = new URL(v);
  } catch {
    ctx.addIssue({ code: z.ZodIssueCode.custom, message: 'must be an http or https URL' });
    return;
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') ctx.addIssue({ code: z.ZodIssueCode.custom, message: 'must be an http or https URL' });
  if (url.search !== '' || url.hash !== '' || url.username !== '' || url.password !== '') {
    ctx.addIssue({ code: z.ZodIssueCode.custom, message: 'must not have a query, fragment or credentials' });
  }
});

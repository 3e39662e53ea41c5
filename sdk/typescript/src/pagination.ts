/** Async iteration over every item of a paged List method (`next_page_token` until empty). */
export interface Page<T> {
  items: T[];
  nextPageToken: string;
}

export class PagedList<T> implements AsyncIterable<T> {
  constructor(private readonly fetchPage: (pageToken: string | undefined) => Promise<Page<T>>) {}

  /** Every page in turn, the first included. */
  async *pages(): AsyncGenerator<Page<T>> {
    let token: string | undefined;
    do {
      const page = await this.fetchPage(token);
      yield page;
      token = page.nextPageToken || undefined;
    } while (token !== undefined);
  }

  async *[Symbol.asyncIterator](): AsyncGenerator<T> {
    for await (const page of this.pages()) yield* page.items;
  }

  /** Every item in an array (reads every page: mind large lists). */
  async toArray(limit = Number.POSITIVE_INFINITY): Promise<T[]> {
    const all: T[] = [];
    for await (const item of this) {
      if (all.length >= limit) break;
      all.push(item);
    }
    return all;
  }
}

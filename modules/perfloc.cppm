// perfloc — the umbrella module: `import perfloc;` brings in every part of the library.
export module perfloc;

export import perfloc.top;
export import perfloc.process;
export import perfloc.collections;
export import perfloc.asio;

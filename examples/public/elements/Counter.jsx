// A custom element: Chainlit renders it from its props, and persists the props with it.
import { Button } from "@/components/ui/button";

export default function Counter() {
  const count = props.count || 0;
  return (
    <div id="custom-counter" className="flex items-center gap-2">
      <span>Count: {count}</span>
      <Button size="sm" onClick={() => updateElement({ ...props, count: count + 1 })}>
        +1
      </Button>
    </div>
  );
}
